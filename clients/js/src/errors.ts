import type { ErrorCode } from './generated/protocol.js';

/** Why a handshake was refused (the start of the server's `connect_error` message). */
export type ConnectErrorCode =
  | 'unauthorized'
  | 'token_expired'
  | 'token_revoked'
  | 'tenant_required'
  | 'too_many_connections';

/** Every code a `SwitchboardError` may carry: the ack codes, the handshake codes, and
 * `timeout` when no ack came within the request's time limit. */
export type SwitchboardErrorCode = ErrorCode | ConnectErrorCode | 'timeout';

/** A refused request (the ack's `{ok: false, error: {code, message}}`), a refused
 * handshake, or a request that got no ack in time. Branch on `code`. */
export class SwitchboardError extends Error {
  readonly code: SwitchboardErrorCode;
  /** The event that failed (`room:create`), or `connect` for a refused handshake. */
  readonly event: string;

  constructor(code: SwitchboardErrorCode, message: string, event: string) {
    super(`${event}: ${code}: ${message}`);
    this.name = 'SwitchboardError';
    this.code = code;
    this.event = event;
  }
}

const CONNECT_CODES: readonly ConnectErrorCode[] = [
  'unauthorized',
  'token_expired',
  'token_revoked',
  'tenant_required',
  'too_many_connections',
];

/** The error for a `connect_error` (`"<code>: <reason>"`). */
export function connectError(err: Error): SwitchboardError {
  const [head, ...rest] = err.message.split(':');
  const code = CONNECT_CODES.find((c) => c === head?.trim());
  return code
    ? new SwitchboardError(code, rest.join(':').trim(), 'connect')
    : new SwitchboardError('unavailable', err.message, 'connect');
}

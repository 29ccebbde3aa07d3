export { SwitchboardClient } from './client.js';
export type { ClientOptions, NamespaceApi, RequestOptions } from './client.js';
export { SwitchboardError } from './errors.js';
export type { ConnectErrorCode, SwitchboardErrorCode } from './errors.js';
export * from './generated/protocol.js';

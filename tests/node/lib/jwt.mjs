// HS256 tokens minted in the test, the way an app's identity provider would: base64url
// header and claims, HMAC-SHA256 over "header.claims", base64url signature.

import { createHmac, randomUUID } from 'node:crypto';

const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

export const nowSecs = () => Math.floor(Date.now() / 1000);

/** Sign `claims` with `secret` (HS256 unless `alg` says HS384/HS512). */
export function sign(claims, secret, alg = 'HS256') {
  const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg];
  if (!hash) throw new Error(`sign: ${alg} is not an HMAC algorithm`);
  const head = `${b64url({ alg, typ: 'JWT' })}.${b64url(claims)}`;
  const sig = createHmac(hash, secret).update(head).digest('base64url');
  return `${head}.${sig}`;
}

/** An unsigned token (`alg: none`, empty signature), which a server must refuse. */
export function unsigned(claims) {
  return `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims)}.`;
}

/**
 * The claims a normal login would carry: sub, tenant, name, exp (1 h), iat, jti, sid.
 * `overrides` replaces any of them; a key set to `undefined` is left out.
 */
export function claimsFor(sub, tenant, overrides = {}) {
  const now = nowSecs();
  const claims = {
    sub,
    tenant,
    name: sub.charAt(0).toUpperCase() + sub.slice(1),
    exp: now + 3600,
    iat: now,
    jti: `jti-${randomUUID()}`,
    sid: `sid-${randomUUID()}`,
    ...overrides,
  };
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k];
  return claims;
}

/** A signed token for `sub@tenant` (see `claimsFor`). */
export function token(secret, sub, tenant, overrides = {}) {
  return sign(claimsFor(sub, tenant, overrides), secret);
}

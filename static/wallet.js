// confab wallet sign-in: Sign-In with Ethereum (EIP-4361) through the page's EIP-1193 provider.
//
// This module owns no DOM and no state. `signInWithWallet()` asks the wallet for its account,
// gets a nonce from the server (`GET /api/auth/siwe/nonce`), builds the EIP-4361 message for this
// page's origin, has the wallet sign it (`personal_sign`, EIP-191) and posts it
// (`POST /api/auth/siwe`). The answer is an access token whose subject is the EIP-55 address;
// use it wherever a guest token is used (`/ws?token=…`, `Authorization: Bearer …`).
// docs/protocol.md, "Wallet sign-in", describes the routes and their error codes.

/**
 * A failed sign-in. `code` is the server's error code (`bad_signature`, `wrong_domain`,
 * `wrong_uri`, `unknown_nonce`, `reused_nonce`, `expired`, `not_yet_valid`, `malformed_message`,
 * `invalid_name`, `body_too_large`, `rate_limited`) or one of this module's: `no_wallet` (no
 * EIP-1193 provider), `rejected` (the user declined in the wallet, EIP-1193 error 4001),
 * `no_account` (the wallet gave no address), `wallet_error` (any other wallet failure),
 * `unreachable` (the server did not answer), `bad_response`.
 */
export class WalletError extends Error {
  /** @param {string} code @param {string} message @param {number} [status] HTTP status, if any */
  constructor(code, message, status = 0) {
    super(message);
    this.name = 'WalletError';
    this.code = code;
    this.status = status;
  }
}

/**
 * @typedef {{ request(args: { method: string, params?: unknown[] }): Promise<unknown> }} Eip1193Provider
 * @typedef {{ token: string, address: string, expiresIn: number }} WalletSignIn
 */

/**
 * Signs in with the wallet behind `provider` and returns the server's token.
 * Throws {@link WalletError}. The user sees two wallet prompts at most: connect (once per site)
 * and sign.
 * @param {{
 *   provider?: Eip1193Provider,  // default `window.ethereum`
 *   origin?: string,             // the page's origin, signed into the message and used as the server; default `location.origin`
 *   name?: string,               // display name for the token (1–64 characters); default: the short address
 *   statement?: string,          // the sentence the wallet shows; one line
 *   fetch?: typeof fetch,
 * }} [opts]
 * @returns {Promise<WalletSignIn>}
 */
export async function signInWithWallet(opts = {}) {
  const provider = opts.provider ?? /** @type {any} */ (globalThis).ethereum;
  if (!provider || typeof provider.request !== 'function') {
    throw new WalletError('no_wallet', 'no Ethereum wallet found in this browser');
  }
  const origin = (opts.origin ?? globalThis.location.origin).replace(/\/+$/, '');
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);

  const accounts = /** @type {unknown} */ (await walletCall(provider, 'eth_requestAccounts', []));
  const account = Array.isArray(accounts) && typeof accounts[0] === 'string' ? accounts[0] : '';
  if (!/^0x[0-9a-fA-F]{40}$/.test(account)) throw new WalletError('no_account', 'the wallet gave no account');
  const address = checksumAddress(account);
  let chainId = 1;
  try {
    const id = await provider.request({ method: 'eth_chainId' });
    const n = typeof id === 'string' ? parseInt(id, 16) : Number(id);
    if (Number.isSafeInteger(n) && n > 0) chainId = n;
  } catch { /* any chain is accepted; 1 when the wallet will not say */ }

  const { nonce } = await api(doFetch, `${origin}/api/auth/siwe/nonce`, { method: 'GET' });
  if (typeof nonce !== 'string') throw new WalletError('bad_response', 'the server sent no nonce');
  const message = buildSiweMessage({
    domain: new URL(origin).host,
    address,
    statement: opts.statement ?? 'Sign in to confab with your wallet.',
    uri: `${origin}/`,
    chainId,
    nonce,
    issuedAt: new Date().toISOString(),
  });
  const signature = await walletCall(provider, 'personal_sign', [utf8Hex(message), account]);
  if (typeof signature !== 'string') throw new WalletError('wallet_error', 'the wallet returned no signature');

  /** @type {{message: string, signature: string, name?: string}} */
  const body = { message, signature };
  if (opts.name) body.name = opts.name;
  const res = await api(doFetch, `${origin}/api/auth/siwe`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  if (typeof res.token !== 'string' || typeof res.address !== 'string') {
    throw new WalletError('bad_response', 'the server sent no token');
  }
  return { token: res.token, address: res.address, expiresIn: Number(res.expires_in) || 0 };
}

/**
 * The EIP-4361 message text, in the exact layout the server checks (no trailing newline).
 * `address` must be EIP-55 checksummed ({@link checksumAddress}); `statement` one line or empty.
 * @param {{ domain: string, address: string, statement?: string, uri: string, chainId: number,
 *   nonce: string, issuedAt: string, expirationTime?: string, notBefore?: string }} f
 * @returns {string}
 */
export function buildSiweMessage(f) {
  const statement = (f.statement || '').replace(/[\r\n]+/g, ' ').trim();
  const lines = [
    `${f.domain} wants you to sign in with your Ethereum account:`,
    f.address,
    '',
    ...(statement ? [statement, ''] : ['']),
    `URI: ${f.uri}`,
    'Version: 1',
    `Chain ID: ${f.chainId}`,
    `Nonce: ${f.nonce}`,
    `Issued At: ${f.issuedAt}`,
  ];
  if (f.expirationTime) lines.push(`Expiration Time: ${f.expirationTime}`);
  if (f.notBefore) lines.push(`Not Before: ${f.notBefore}`);
  return lines.join('\n');
}

/**
 * The claims of an access token, unverified (the server verifies; the page only reads `sub`, `name`,
 * `exp` and `room` to decide which token to use). Null when it is not a JWT with a `sub`.
 * @param {string} jwt
 * @returns {{sub: string, name: string, exp: number, room: string}|null}
 */
export function tokenClaims(jwt) {
  try {
    const b64 = String(jwt).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const c = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (ch) => ch.charCodeAt(0))));
    if (!c || typeof c.sub !== 'string' || !c.sub) return null;
    return { sub: c.sub, name: typeof c.name === 'string' ? c.name : '', exp: Number(c.exp) || 0,
      room: typeof c.room === 'string' ? c.room : '' };
  } catch {
    return null;
  }
}

/** `0x1234…abcd` (the first 4 and last 4 hex digits). @param {string} address */
export function shortAddress(address) {
  const a = String(address || '');
  return a.length > 10 ? `${a.slice(0, 6)}…${a.slice(-4)}` : a;
}

/**
 * The EIP-55 mixed-case checksum form of a 20-byte hex address (any case in, `0x` optional).
 * @param {string} address
 * @returns {string}
 */
export function checksumAddress(address) {
  const hex = String(address).replace(/^0x/i, '').toLowerCase();
  if (!/^[0-9a-f]{40}$/.test(hex)) throw new WalletError('no_account', `not an address: ${address}`);
  const hash = keccak256(new TextEncoder().encode(hex));
  let out = '0x';
  for (let i = 0; i < 40; i++) {
    const nibble = (hash[i >> 1] >> (i % 2 ? 0 : 4)) & 0xf;
    out += nibble >= 8 ? hex[i].toUpperCase() : hex[i];
  }
  return out;
}

// --- internals ---------------------------------------------------------------------------------

/** @param {Eip1193Provider} provider @param {string} method @param {unknown[]} params */
async function walletCall(provider, method, params) {
  try {
    return await provider.request({ method, params });
  } catch (e) {
    const err = /** @type {{code?: number, message?: string}} */ (e || {});
    if (err.code === 4001) throw new WalletError('rejected', 'the request was declined in the wallet');
    throw new WalletError('wallet_error', `the wallet failed: ${err.message || String(e)}`);
  }
}

/**
 * A JSON request to the server; non-2xx answers become a WalletError with the server's code.
 * @param {typeof fetch} doFetch @param {string} url @param {RequestInit} init
 * @returns {Promise<Record<string, unknown>>}
 */
async function api(doFetch, url, init) {
  /** @type {Response} */
  let res;
  try {
    res = await doFetch(url, { ...init, credentials: 'same-origin', cache: 'no-store' });
  } catch {
    throw new WalletError('unreachable', 'the server is unreachable');
  }
  /** @type {any} */
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const code = body && typeof body.code === 'string' ? body.code : 'bad_response';
    const msg = body && typeof body.message === 'string' ? body.message : `HTTP ${res.status}`;
    throw new WalletError(code, msg, res.status);
  }
  if (!body || typeof body !== 'object') throw new WalletError('bad_response', 'the server sent no JSON');
  return body;
}

/** `0x` + the UTF-8 bytes of `s` in hex (the `personal_sign` data parameter). @param {string} s */
function utf8Hex(s) {
  let out = '0x';
  for (const b of new TextEncoder().encode(s)) out += b.toString(16).padStart(2, '0');
  return out;
}

const MASK64 = (1n << 64n) - 1n;
/** Keccak-f[1600] round constants. */
const RC = [
  0x0000000000000001n, 0x0000000000008082n, 0x800000000000808an, 0x8000000080008000n,
  0x000000000000808bn, 0x0000000080000001n, 0x8000000080008081n, 0x8000000000008009n,
  0x000000000000008an, 0x0000000000000088n, 0x0000000080008009n, 0x000000008000000an,
  0x000000008000808bn, 0x800000000000008bn, 0x8000000000008089n, 0x8000000000008003n,
  0x8000000000008002n, 0x8000000000000080n, 0x000000000000800an, 0x800000008000000an,
  0x8000000080008081n, 0x8000000000008080n, 0x0000000080000001n, 0x8000000080008008n,
];
/** Rotation offsets, lane x + 5y. */
const ROT = [0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14];

/** @param {bigint} v @param {number} n */
function rotl(v, n) {
  if (n === 0) return v;
  const b = BigInt(n);
  return ((v << b) | (v >> (64n - b))) & MASK64;
}

/** @param {bigint[]} a the 25 lanes, permuted in place */
function keccakF(a) {
  const c = new Array(5), b = new Array(25);
  for (let round = 0; round < 24; round++) {
    for (let x = 0; x < 5; x++) c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
    for (let x = 0; x < 5; x++) {
      const d = c[(x + 4) % 5] ^ rotl(c[(x + 1) % 5], 1);
      for (let y = 0; y < 25; y += 5) a[x + y] ^= d;
    }
    for (let x = 0; x < 5; x++) {
      for (let y = 0; y < 5; y++) b[y + 5 * ((2 * x + 3 * y) % 5)] = rotl(a[x + 5 * y], ROT[x + 5 * y]);
    }
    for (let y = 0; y < 25; y += 5) {
      for (let x = 0; x < 5; x++) a[x + y] = b[x + y] ^ (~b[((x + 1) % 5) + y] & MASK64 & b[((x + 2) % 5) + y]);
    }
    a[0] ^= RC[round];
  }
}

/**
 * Keccak-256 (the original Keccak padding, as Ethereum uses it; not SHA3-256). Small and slow:
 * for checksumming addresses, not for bulk data.
 * @param {Uint8Array} data
 * @returns {Uint8Array} 32 bytes
 */
export function keccak256(data) {
  const rate = 136;
  const padded = new Uint8Array(Math.floor(data.length / rate + 1) * rate);
  padded.set(data);
  padded[data.length] ^= 0x01;
  padded[padded.length - 1] ^= 0x80;
  const state = new Array(25).fill(0n);
  for (let off = 0; off < padded.length; off += rate) {
    for (let i = 0; i < rate / 8; i++) {
      let lane = 0n;
      for (let k = 7; k >= 0; k--) lane = (lane << 8n) | BigInt(padded[off + i * 8 + k]);
      state[i] ^= lane;
    }
    keccakF(state);
  }
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = Number((state[i >> 3] >> BigInt(8 * (i % 8))) & 0xffn);
  return out;
}

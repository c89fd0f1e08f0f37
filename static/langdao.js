// confab LangDAO calls from the page: the student starts a paid session on chain through the page's
// EIP-1193 provider (`window.ethereum`), the wallet signing and sending every transaction.
//
// This module owns no DOM and no state. `startOnChain()` reads the contract (the tutor's rate, the
// student's deposit, the token's allowance), sends `approve` and `deposit` when the deposit does not
// cover the prepaid time, then `startSession(tutor, language)`, and waits for each receipt by polling
// `eth_getTransactionReceipt`. Calls are ABI-encoded here (static types only: address, uint256,
// uint8, bool), selectors hashed with wallet.js's Keccak-256: no bundler, no library.
// contracts/LangDAO.sol is the contract; docs/protocol.md, "Paid sessions from the page", the flow.

import { keccak256, checksumAddress } from '/wallet.js';

/**
 * A failed contract step. `code`: `rejected` (declined in the wallet, EIP-1193 4001),
 * `wallet_error` (any other wallet failure), `bad_address`, `not_a_tutor` (the tutor has no rate
 * for that language), `tutor_busy` (the tutor has a running session on chain),
 * `insufficient_funds` (the student's tokens do not cover the prepaid time), `reverted` (a
 * transaction or its simulation reverted; `message` has the contract's reason), `timeout` (no
 * receipt in time), `wrong_chain` (the wallet is on another chain than the contract's and did not
 * switch).
 */
export class ChainError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = 'ChainError';
    this.code = code;
  }
}

/** @typedef {import('/wallet.js').Eip1193Provider} Eip1193Provider */
/** @typedef {'check'|'approve'|'deposit'|'start'|'confirm'} Step */

/** How receipts are awaited. */
export const CHAIN_TIMING = Object.freeze({ receiptPollMs: 1000, receiptTimeoutMs: 180_000 });

/** The contract's minimum prepaid time (LangDAO.MIN_PREPAID_SECONDS). */
export const MIN_PREPAID_SECONDS = 60;

/**
 * The student (the wallet's account) starts a session with `tutor` on chain, depositing first when
 * the deposit here does not cover `prepaySeconds` at the tutor's rate. Resolves once
 * `startSession` is mined. Throws {@link ChainError}.
 * @param {{
 *   provider: Eip1193Provider,
 *   contract: string,       // the LangDAO contract address
 *   chainId?: number|null,  // the contract's chain (EIP-155 id): the wallet is asked to switch to it
 *   tutor: string,
 *   language: number,       // 0–255
 *   prepaySeconds?: number, // how long the deposit must last at the tutor's rate (at least 60; default 3600)
 *   onStep?: (step: Step) => void,
 * }} opts
 * @returns {Promise<{txHash: string, sessionId: string, student: string, ratePerSecond: bigint}>}
 */
export async function startOnChain(opts) {
  const { provider } = opts;
  const step = opts.onStep || (() => {});
  const dao = address(opts.contract, 'contract');
  const tutor = address(opts.tutor, 'tutor');
  const language = Number(opts.language);
  if (!Number.isInteger(language) || language < 0 || language > 255) {
    throw new ChainError('bad_address', `not a language id: ${opts.language}`);
  }
  const prepay = Math.max(MIN_PREPAID_SECONDS, Math.floor(Number(opts.prepaySeconds) || 3600));

  step('check');
  const accounts = await wallet(provider, 'eth_requestAccounts', []);
  if (opts.chainId) await onChain(provider, Number(opts.chainId));
  const student = address(Array.isArray(accounts) ? String(accounts[0] || '') : '', 'account');
  if (student.toLowerCase() === tutor.toLowerCase()) throw new ChainError('bad_address', 'you cannot tutor yourself');

  const rate = await readUint(provider, dao, 'tutorRates(address,uint8)', [tutor, language]);
  if (rate === 0n) throw new ChainError('not_a_tutor', `${tutor} does not teach language ${language}`);
  const active = await read(provider, dao, 'activeSessions(address)', [tutor]);
  if (word(active, 9) !== 0n) throw new ChainError('tutor_busy', 'the tutor has a session running on chain');

  const need = rate * BigInt(prepay);
  const deposited = await readUint(provider, dao, 'balances(address)', [student]);
  if (deposited < need) {
    const amount = need - deposited;
    const token = address(`0x${hexWord(await read(provider, dao, 'token()', []), 0).slice(24)}`, 'token');
    const held = await readUint(provider, token, 'balanceOf(address)', [student]);
    if (held < amount) {
      throw new ChainError('insufficient_funds', `the session needs ${amount} more token units; the wallet holds ${held}`);
    }
    const allowed = await readUint(provider, token, 'allowance(address,address)', [student, dao]);
    if (allowed < amount) {
      step('approve');
      await transact(provider, student, token, 'approve(address,uint256)', [dao, amount]);
    }
    step('deposit');
    await transact(provider, student, dao, 'deposit(uint256)', [amount]);
  }

  step('start');
  // Simulate first: a revert shows the contract's reason and costs the user no gas or prompt.
  await read(provider, dao, 'startSession(address,uint8)', [tutor, language], student);
  const receipt = await transact(provider, student, dao, 'startSession(address,uint8)', [tutor, language], () => step('confirm'));
  const started = topicOf('SessionStarted(uint256,address,address,uint8)');
  const log = (receipt.logs || []).find((/** @type {any} */ l) => String(l.topics?.[0]).toLowerCase() === started
    && String(l.address).toLowerCase() === dao.toLowerCase());
  return {
    txHash: String(receipt.transactionHash),
    sessionId: log ? BigInt(log.topics[1]).toString() : '',
    student,
    ratePerSecond: rate,
  };
}

/**
 * The tutor's rate for `language`, token units per second (0n: not offered). Throws {@link ChainError}.
 * @param {Eip1193Provider} provider @param {string} contract @param {string} tutor @param {number} language
 */
export function tutorRate(provider, contract, tutor, language) {
  return readUint(provider, address(contract, 'contract'), 'tutorRates(address,uint8)', [address(tutor, 'tutor'), language]);
}

// --- ABI -------------------------------------------------------------------------------------

/**
 * `0x` + the 4-byte selector and the 32-byte words of `args` for a function of static types.
 * @param {string} signature e.g. `startSession(address,uint8)`
 * @param {(string|number|bigint|boolean)[]} args
 */
export function encodeCall(signature, args) {
  const types = /\(([^)]*)\)/.exec(signature)?.[1].split(',').filter(Boolean) || [];
  if (types.length !== args.length) throw new Error(`${signature}: ${args.length} arguments`);
  return `0x${selector(signature)}${types.map((t, i) => encodeWord(t, args[i])).join('')}`;
}

/** The 8 hex digits of a function selector. @param {string} signature */
export function selector(signature) {
  return hex(keccak256(new TextEncoder().encode(signature))).slice(0, 8);
}

/** `0x` + keccak256 of an event signature (its topic 0). @param {string} signature */
export function topicOf(signature) {
  return `0x${hex(keccak256(new TextEncoder().encode(signature)))}`;
}

/** @param {string} type @param {string|number|bigint|boolean} v */
function encodeWord(type, v) {
  if (type === 'address') return address(String(v), 'argument').slice(2).toLowerCase().padStart(64, '0');
  if (type === 'bool') return (v ? '1' : '0').padStart(64, '0');
  const m = /^uint(\d*)$/.exec(type);
  if (!m) throw new Error(`unsupported ABI type ${type}`);
  const n = BigInt(/** @type {any} */ (v));
  const bits = BigInt(Number(m[1] || 256));
  if (n < 0n || n >= 1n << bits) throw new Error(`${n} does not fit ${type}`);
  return n.toString(16).padStart(64, '0');
}

/** Word `i` of ABI-encoded return data, as a bigint. @param {string} data @param {number} i */
function word(data, i) {
  const w = hexWord(data, i);
  return w ? BigInt(`0x${w}`) : 0n;
}

/** Word `i` of ABI-encoded return data as 64 hex digits ('' if missing). @param {string} data @param {number} i */
function hexWord(data, i) {
  return String(data || '').replace(/^0x/, '').slice(i * 64, i * 64 + 64);
}

/** @param {Uint8Array} bytes */
function hex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

// --- calls -----------------------------------------------------------------------------------

/** EIP-55 form of `a`, or a ChainError naming `what`. @param {string} a @param {string} what */
function address(a, what) {
  const s = String(a || '').trim();
  if (!/^0x[0-9a-fA-F]{40}$/.test(s)) throw new ChainError('bad_address', `not an address (${what}): ${s || 'empty'}`);
  return checksumAddress(s);
}

/**
 * A provider request; the wallet's refusals become ChainErrors (a revert keeps its reason).
 * @param {Eip1193Provider} provider @param {string} method @param {unknown[]} params
 * @returns {Promise<any>}
 */
/**
 * Makes sure the wallet is on chain `want` (EIP-155 id), asking it to switch (EIP-3326
 * `wallet_switchEthereumChain`) when it is not: a transaction signed for another chain would go to
 * whatever lives at the contract's address there. Throws {@link ChainError} `wrong_chain`, or
 * `rejected` when the user declines the switch.
 * @param {Eip1193Provider} provider @param {number} want
 */
async function onChain(provider, want) {
  const current = async () => Number(BigInt(String(await wallet(provider, 'eth_chainId', []))));
  if (await current() === want) return;
  try {
    await wallet(provider, 'wallet_switchEthereumChain', [{ chainId: `0x${want.toString(16)}` }]);
  } catch (e) {
    if (/** @type {any} */ (e)?.code === 'rejected') throw e;
  }
  const now = await current();
  if (now !== want) {
    throw new ChainError('wrong_chain', `your wallet is on chain ${now}; switch it to chain ${want}, where the LangDAO contract is`);
  }
}

async function wallet(provider, method, params) {
  try {
    return await provider.request({ method, params });
  } catch (e) {
    const err = /** @type {{code?: number, message?: string, data?: unknown}} */ (e || {});
    if (err.code === 4001) throw new ChainError('rejected', 'the request was declined in the wallet');
    const reason = revertReason(err.data) || revertReason(/** @type {any} */ (err.data)?.data);
    const msg = String(err.message || e);
    if (reason || err.code === 3 || /revert/i.test(msg)) {
      throw new ChainError('reverted', `the contract refused: ${reason || msg}`);
    }
    throw new ChainError('wallet_error', `the wallet failed: ${msg}`);
  }
}

/** The string of an `Error(string)` revert payload, or ''. @param {unknown} data */
function revertReason(data) {
  const d = typeof data === 'string' ? data.replace(/^0x/, '') : '';
  if (!d.startsWith('08c379a0') || d.length < 8 + 128) return '';
  const len = Number(BigInt(`0x${d.slice(8 + 64, 8 + 128)}`));
  const body = d.slice(8 + 128, 8 + 128 + len * 2);
  const bytes = new Uint8Array(body.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(body.slice(i * 2, i * 2 + 2), 16);
  return new TextDecoder().decode(bytes);
}

/**
 * `eth_call` of `signature(args)` on `to` (from `from`, when given): the raw return data.
 * @param {Eip1193Provider} provider @param {string} to @param {string} signature
 * @param {(string|number|bigint|boolean)[]} args @param {string} [from]
 */
async function read(provider, to, signature, args, from) {
  const tx = /** @type {Record<string, string>} */ ({ to, data: encodeCall(signature, args) });
  if (from) tx.from = from;
  return String(await wallet(provider, 'eth_call', [tx, 'latest']));
}

/** @param {Eip1193Provider} provider @param {string} to @param {string} signature @param {(string|number|bigint)[]} args */
async function readUint(provider, to, signature, args) {
  return word(await read(provider, to, signature, args), 0);
}

/**
 * Sends `signature(args)` to `to` from `from` through the wallet and waits for its receipt;
 * `onSent` runs once the wallet returned the hash. Throws `reverted` when the receipt's status is 0.
 * @param {Eip1193Provider} provider @param {string} from @param {string} to @param {string} signature
 * @param {(string|number|bigint)[]} args @param {() => void} [onSent]
 * @returns {Promise<any>} the receipt
 */
async function transact(provider, from, to, signature, args, onSent) {
  const hash = await wallet(provider, 'eth_sendTransaction', [{ from, to, data: encodeCall(signature, args) }]);
  if (typeof hash !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(hash)) {
    throw new ChainError('wallet_error', 'the wallet returned no transaction hash');
  }
  onSent?.();
  const receipt = await waitForReceipt(provider, hash);
  if (BigInt(receipt.status ?? '0x0') !== 1n) {
    throw new ChainError('reverted', `${signature.split('(')[0]} reverted (transaction ${hash})`);
  }
  return receipt;
}

/**
 * Polls `eth_getTransactionReceipt` until the transaction is mined. Throws `timeout`.
 * @param {Eip1193Provider} provider @param {string} hash
 */
export async function waitForReceipt(provider, hash) {
  const deadline = Date.now() + CHAIN_TIMING.receiptTimeoutMs;
  for (;;) {
    const receipt = await wallet(provider, 'eth_getTransactionReceipt', [hash]);
    if (receipt && receipt.blockNumber) return receipt;
    if (Date.now() > deadline) throw new ChainError('timeout', `transaction ${hash} was not mined in time`);
    await new Promise((r) => setTimeout(r, CHAIN_TIMING.receiptPollMs));
  }
}

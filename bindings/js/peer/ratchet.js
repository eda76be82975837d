/**
 * The Double Ratchet of Masq's AESGCM suite (suite 2, ratchet message
 * version 3; docs/SECURITY.md "Sessions", docs/PROTOCOL.md "Cipher suites"):
 *
 *   root step:  (rk, ck) = HKDF-SHA256(salt: rk, ikm: X25519(...), info: "masq ratchet root v1", 64)
 *   chain step: mk = HMAC-SHA256(ck, 0x01), ck' = HMAC-SHA256(ck, 0x02)
 *   message:    header (41 bytes: u8 3 · [32] ratchet key · u32 previous chain length · u32 number)
 *               · AES-256-GCM(mk, nonce 0, AD = ad || header)
 *
 * The state is a plain object (structured-cloneable: it is kept in
 * IndexedDB, ratchet private keys as non-extractable CryptoKeys). Decryption
 * works on a copy, so a tampered, replayed or truncated message leaves the
 * state as it was.
 * @module masq/peer/ratchet
 */
import { concat, hex, utf8, Writer, FormatError } from "./bytes.js";
import { aesSeal, aesOpen, hkdf, hmacSHA256, x25519, x25519Generate, x25519Import, AuthError } from "./crypto.js";

export const VERSION = 3;
export const HEADER_LENGTH = 41;
export const MAX_SKIP = 1000;
export const MAX_STORED = 2000;
const ROOT_INFO = utf8.encode("masq ratchet root v1");
const ZERO_NONCE = new Uint8Array(12);
const ONE = new Uint8Array([1]);
const TWO = new Uint8Array([2]);

/**
 * @typedef {Object} RatchetState
 * @property {{privateKey: CryptoKey, publicKey: Uint8Array}} s - this side's ratchet key pair
 * @property {Uint8Array|null} r - the peer's ratchet key
 * @property {Uint8Array} rk - root key
 * @property {Uint8Array|null} cks - sending chain key
 * @property {Uint8Array|null} ckr - receiving chain key
 * @property {number} ns @property {number} nr @property {number} pn
 * @property {Array<{r: string, n: number, key: Uint8Array}>} skipped
 * @property {Uint8Array[]} [fixedKeys] - ratchet private keys to use instead of fresh ones (test vectors only)
 */

async function newKey(state) {
  if (state.fixedKeys && state.fixedKeys.length) return x25519Import(state.fixedKeys.shift());
  return x25519Generate();
}

async function rootStep(rk, dh) {
  const out = await hkdf(rk, dh, ROOT_INFO, 64);
  return [out.slice(0, 32), out.slice(32, 64)];
}

async function chainStep(ck) {
  return [await hmacSHA256(ck, ONE), await hmacSHA256(ck, TWO)];
}

/** The side that sends first: knows the peer's initial ratchet key. */
export async function initSender(sharedSecret, peerRatchetKey, fixedKeys) {
  const state = { s: null, r: peerRatchetKey, rk: null, cks: null, ckr: null, ns: 0, nr: 0, pn: 0, skipped: [], fixedKeys: fixedKeys ? fixedKeys.slice() : undefined };
  state.s = await newKey(state);
  [state.rk, state.cks] = await rootStep(sharedSecret, await x25519(state.s.privateKey, peerRatchetKey));
  return state;
}

/** The side that receives first: owns the initial ratchet key pair. */
export function initReceiver(sharedSecret, ownRatchetKey, fixedKeys) {
  return { s: ownRatchetKey, r: null, rk: sharedSecret, cks: null, ckr: null, ns: 0, nr: 0, pn: 0, skipped: [], fixedKeys: fixedKeys ? fixedKeys.slice() : undefined };
}

/** @param {RatchetState} state */
export function canSend(state) {
  return state.cks !== null;
}

function copy(state) {
  return { ...state, skipped: state.skipped.slice(), fixedKeys: state.fixedKeys ? state.fixedKeys.slice() : undefined };
}

/**
 * Encrypt one message. Returns the message and the next state (the caller
 * stores it before sending: a message key is never used twice).
 * @param {RatchetState} state @param {Uint8Array} plaintext @param {Uint8Array} ad
 * @returns {Promise<{message: Uint8Array, state: RatchetState}>}
 */
export async function encrypt(state, plaintext, ad) {
  if (!state.cks) throw new FormatError("this side cannot send before it has received a message");
  const next = copy(state);
  const header = new Writer(HEADER_LENGTH).byte(VERSION).bytes(state.s.publicKey).u32(state.pn).u32(state.ns).done();
  const [mk, ck] = await chainStep(state.cks);
  const body = await aesSeal(mk, ZERO_NONCE, concat(ad, header), plaintext);
  next.cks = ck;
  next.ns = state.ns + 1;
  return { message: concat(header, body), state: next };
}

async function skip(state, until) {
  if (!state.ckr || until <= state.nr) return;
  if (until - state.nr > MAX_SKIP) throw new AuthError(`message would skip ${until - state.nr} keys; the limit is ${MAX_SKIP}`);
  const r = hex(state.r);
  while (state.nr < until) {
    const [mk, ck] = await chainStep(state.ckr);
    state.skipped.push({ r, n: state.nr, key: mk });
    state.ckr = ck;
    state.nr++;
  }
  if (state.skipped.length > MAX_STORED) state.skipped.splice(0, state.skipped.length - MAX_STORED);
}

async function dhStep(state, peerKey) {
  state.pn = state.ns;
  state.ns = 0;
  state.nr = 0;
  state.r = peerKey;
  const [rk1, ckr] = await rootStep(state.rk, await x25519(state.s.privateKey, peerKey));
  state.s = await newKey(state);
  const [rk2, cks] = await rootStep(rk1, await x25519(state.s.privateKey, peerKey));
  state.rk = rk2;
  state.ckr = ckr;
  state.cks = cks;
}

/**
 * Authenticate and decrypt one message.
 * @param {RatchetState} state @param {Uint8Array} message @param {Uint8Array} ad
 * @returns {Promise<{plaintext: Uint8Array, state: RatchetState}>} the state is the caller's to keep
 */
export async function decrypt(state, message, ad) {
  if (message.length < HEADER_LENGTH + 16) throw new FormatError("ratchet message too short");
  if (message[0] !== VERSION) {
    throw new FormatError(message[0] === 2 ? "a ratchet message of suite ChaChaPoly on an AESGCM session" : `ratchet message version ${message[0]} unknown`);
  }
  const header = message.subarray(0, HEADER_LENGTH);
  const dv = new DataView(message.buffer, message.byteOffset);
  const key = message.slice(1, 33), pn = dv.getUint32(33), n = dv.getUint32(37);
  const fullAd = concat(ad, header);
  const body = message.subarray(HEADER_LENGTH);
  const keyHex = hex(key);
  const index = state.skipped.findIndex((s) => s.r === keyHex && s.n === n);
  if (index >= 0) {
    const plaintext = await aesOpen(state.skipped[index].key, ZERO_NONCE, fullAd, body);
    const next = copy(state);
    next.skipped.splice(index, 1);
    return { plaintext, state: next };
  }
  const next = copy(state);
  if (!next.r || hex(next.r) !== keyHex) {
    if (next.ckr) await skip(next, pn);
    await dhStep(next, key);
  } else if (n < next.nr) {
    throw new AuthError("replayed or already decrypted message");
  }
  await skip(next, n);
  if (!next.ckr) throw new FormatError("no receiving chain");
  const [mk, ck] = await chainStep(next.ckr);
  const plaintext = await aesOpen(mk, ZERO_NONCE, fullAd, body);
  next.ckr = ck;
  next.nr = n + 1;
  return { plaintext, state: next };
}

/**
 * Every primitive the browser peer uses, and only WebCrypto's
 * (`crypto.subtle`): X25519, Ed25519, SHA-256, HMAC-SHA256, HKDF-SHA256,
 * AES-256-GCM, and its CSPRNG. Nothing here computes a primitive by hand.
 * Device keys are generated non-extractable; private keys given as bytes
 * (test vectors only) are imported from PKCS#8.
 * @module masq/peer/crypto
 */
import { concat, FormatError } from "./bytes.js";

const subtle = globalThis.crypto.subtle;

/** Thrown when a tag, a signature or a handshake does not verify. */
export class AuthError extends Error {
  constructor(message) {
    super(message);
    this.name = "AuthError";
  }
}

/** @param {number} n @returns {Uint8Array} */
export function randomBytes(n) {
  const out = new Uint8Array(n);
  globalThis.crypto.getRandomValues(out);
  return out;
}

/** @param {Uint8Array} data @returns {Promise<Uint8Array>} */
export async function sha256(data) {
  return new Uint8Array(await subtle.digest("SHA-256", data));
}

/** @param {Uint8Array} key @param {Uint8Array} data @returns {Promise<Uint8Array>} */
export async function hmacSHA256(key, data) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

/**
 * HKDF-SHA256 (RFC 5869).
 * @param {Uint8Array} salt @param {Uint8Array} ikm @param {Uint8Array} info @param {number} length
 * @returns {Promise<Uint8Array>}
 */
export async function hkdf(salt, ikm, info, length) {
  const k = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  return new Uint8Array(await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, k, length * 8));
}

/**
 * AES-256-GCM: ciphertext || 16-byte tag.
 * @param {Uint8Array} key @param {Uint8Array} nonce 12 bytes @param {Uint8Array} ad @param {Uint8Array} plaintext
 */
export async function aesSeal(key, nonce, ad, plaintext) {
  const k = await subtle.importKey("raw", key, "AES-GCM", false, ["encrypt"]);
  return new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: ad, tagLength: 128 }, k, plaintext));
}

/** @param {Uint8Array} key @param {Uint8Array} nonce @param {Uint8Array} ad @param {Uint8Array} ciphertext */
export async function aesOpen(key, nonce, ad, ciphertext) {
  if (ciphertext.length < 16) throw new AuthError("ciphertext shorter than its tag");
  const k = await subtle.importKey("raw", key, "AES-GCM", false, ["decrypt"]);
  try {
    return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: ad, tagLength: 128 }, k, ciphertext));
  } catch (_) {
    throw new AuthError("message authentication failed");
  }
}

/**
 * An X25519 key pair: the private half a CryptoKey (non-extractable unless
 * imported from bytes for tests), the public half raw bytes.
 * @typedef {{privateKey: CryptoKey, publicKey: Uint8Array}} KeyPair
 */

/** @param {boolean} [extractable] @returns {Promise<KeyPair>} */
export async function x25519Generate(extractable = false) {
  const pair = await subtle.generateKey({ name: "X25519" }, extractable, ["deriveBits"]);
  return { privateKey: pair.privateKey, publicKey: new Uint8Array(await subtle.exportKey("raw", pair.publicKey)) };
}

const X25519_PKCS8 = new Uint8Array([0x30, 0x2e, 2, 1, 0, 0x30, 5, 6, 3, 0x2b, 0x65, 0x6e, 4, 0x22, 4, 0x20]);
const ED25519_PKCS8 = new Uint8Array([0x30, 0x2e, 2, 1, 0, 0x30, 5, 6, 3, 0x2b, 0x65, 0x70, 4, 0x22, 4, 0x20]);

/** Import a raw 32-byte private key (test vectors). @param {Uint8Array} raw @returns {Promise<KeyPair>} */
export async function x25519Import(raw) {
  if (raw.length !== 32) throw new FormatError("X25519 private keys are 32 bytes");
  const privateKey = await subtle.importKey("pkcs8", concat(X25519_PKCS8, raw), { name: "X25519" }, true, ["deriveBits"]);
  const jwk = await subtle.exportKey("jwk", privateKey);
  const pub = Uint8Array.from(atob(jwk.x.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  return { privateKey, publicKey: pub };
}

/**
 * X25519(private, peer public); an all-zero result (a low-order point) is refused.
 * @param {CryptoKey} privateKey @param {Uint8Array} peerPublic
 * @returns {Promise<Uint8Array>}
 */
export async function x25519(privateKey, peerPublic) {
  if (!(peerPublic instanceof Uint8Array) || peerPublic.length !== 32) throw new FormatError("X25519 keys are 32 bytes");
  let shared;
  try {
    const pub = await subtle.importKey("raw", peerPublic, { name: "X25519" }, true, []);
    shared = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: pub }, privateKey, 256));
  } catch (_) {
    throw new AuthError("X25519 with this peer key gives no shared secret (low-order point)");
  }
  if (shared.every((b) => b === 0)) throw new AuthError("X25519 with this peer key gives no shared secret (low-order point)");
  return shared;
}

/** @returns {Promise<{privateKey: CryptoKey, publicKey: Uint8Array}>} a non-extractable Ed25519 key */
export async function ed25519Generate() {
  const pair = await subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  return { privateKey: pair.privateKey, publicKey: new Uint8Array(await subtle.exportKey("raw", pair.publicKey)) };
}

/** Import a raw 32-byte Ed25519 seed (test vectors). @param {Uint8Array} seed */
export async function ed25519Import(seed) {
  const privateKey = await subtle.importKey("pkcs8", concat(ED25519_PKCS8, seed), { name: "Ed25519" }, true, ["sign"]);
  const jwk = await subtle.exportKey("jwk", privateKey);
  const pub = Uint8Array.from(atob(jwk.x.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  return { privateKey, publicKey: pub };
}

/** @param {CryptoKey} privateKey @param {Uint8Array} message @returns {Promise<Uint8Array>} 64 bytes */
export async function ed25519Sign(privateKey, message) {
  return new Uint8Array(await subtle.sign("Ed25519", privateKey, message));
}

/** @param {Uint8Array} publicKey @param {Uint8Array} signature @param {Uint8Array} message @returns {Promise<boolean>} */
export async function ed25519Verify(publicKey, signature, message) {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    const k = await subtle.importKey("raw", publicKey, { name: "Ed25519" }, true, ["verify"]);
    return await subtle.verify("Ed25519", k, signature, message);
  } catch (_) {
    return false;
  }
}

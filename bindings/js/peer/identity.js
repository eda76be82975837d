/**
 * This page's device identity: an X25519 key (what handshakes authenticate;
 * the device id and fingerprint derive from it) and an Ed25519 key (signs
 * the device card at pairing), both generated non-extractable by WebCrypto
 * and kept in IndexedDB as CryptoKeys — their private halves never exist as
 * bytes this code could read.
 * @module masq/peer/identity
 */
import { hex, concat } from "./bytes.js";
import { sha256, x25519Generate, ed25519Generate } from "./crypto.js";

/**
 * @typedef {Object} Identity
 * @property {{privateKey: CryptoKey, publicKey: Uint8Array}} agreement - X25519
 * @property {{privateKey: CryptoKey, publicKey: Uint8Array}} signing - Ed25519
 */

/** @returns {Promise<Identity>} */
export async function generateIdentity() {
  return { agreement: await x25519Generate(false), signing: await ed25519Generate() };
}

/** The first 10 bytes of SHA-256 of the X25519 key, hex (20 characters). */
export async function deviceId(agreementPublic) {
  return hex((await sha256(agreementPublic)).slice(0, 10));
}

export const EMOJI = [
  "🐶", "🐱", "🦊", "🐻", "🐼", "🐨", "🐯", "🦁", "🐮", "🐷", "🐸", "🐵", "🐔", "🐧", "🐦", "🦆",
  "🦉", "🐴", "🦄", "🐝", "🦋", "🐌", "🐞", "🐢", "🐍", "🐙", "🦀", "🐬", "🐳", "🦈", "🐘", "🦒",
  "🌵", "🌲", "🌻", "🍄", "🌙", "⭐", "🔥", "🌈", "☔", "❄", "🍎", "🍋", "🍌", "🍇", "🍓", "🥕",
  "🌽", "🍞", "🧀", "🍕", "🎂", "☕", "⚽", "🎸", "🎲", "🚲", "🚀", "⛵", "🔑", "🔔", "📚", "✏",
];

/**
 * The fingerprint people compare between two screens (docs/SECURITY.md):
 * 5,200 rounds of SHA-256 over the X25519 key; 30 digits in six groups and
 * the same value as 8 emoji. Both screens show the same for the same device.
 * @param {Uint8Array} agreementPublic @returns {Promise<{digits: string, emoji: string}>}
 */
export async function fingerprint(agreementPublic) {
  let digest = await sha256(concat([0x4d, 0x46, 1], agreementPublic));
  for (let i = 0; i < 5200; i++) digest = await sha256(concat(digest, agreementPublic));
  const groups = [];
  for (let i = 0; i < 6; i++) {
    let n = 0n;
    for (const b of digest.slice(i * 5, i * 5 + 5)) n = (n << 8n) | BigInt(b);
    groups.push(String(n % 100000n).padStart(5, "0"));
  }
  const e = (await sha256(digest)).slice(0, 8);
  return { digits: groups.join(" "), emoji: [...e].map((b) => EMOJI[b & 63]).join("") };
}

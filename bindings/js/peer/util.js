/**
 * Small shared helpers (re-exports of bytes.js, and replica ids).
 * @module masq/peer/util
 */
export { hex, unhex, utf8, fromUtf8, concat, equal } from "./bytes.js";

/** A random non-zero 64-bit replica id. @returns {bigint} */
export function randomReplica() {
  const b = new Uint8Array(8);
  do globalThis.crypto.getRandomValues(b); while (b.every((x) => x === 0));
  return new DataView(b.buffer).getBigUint64(0);
}

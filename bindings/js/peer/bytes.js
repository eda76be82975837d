/**
 * Byte helpers shared by the peer modules: hex, base64url, concatenation,
 * constant-time comparison, and the wire encodings of docs/PROTOCOL.md
 * (big-endian integers, unsigned LEB128 varints). 64-bit integers are
 * BigInt everywhere (replica ids and hybrid-logical-clock timestamps do not
 * fit a double).
 * @module masq/peer/bytes
 */

const HEX = "0123456789abcdef";

/** @param {Uint8Array} b @returns {string} lowercase hex */
export function hex(b) {
  let s = "";
  for (let i = 0; i < b.length; i++) s += HEX[b[i] >> 4] + HEX[b[i] & 15];
  return s;
}

/** @param {string} s @returns {Uint8Array} */
export function unhex(s) {
  if (s.length % 2 !== 0 || /[^0-9a-fA-F]/.test(s)) throw new TypeError("not hex");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(i * 2, 2), 16);
  return out;
}

/** @param {Uint8Array} b @returns {string} base64url without padding */
export function b64url(b) {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** @param {string} s @returns {Uint8Array|null} null when malformed */
export function unb64url(s) {
  if (typeof s !== "string" || /[^A-Za-z0-9_-]/.test(s) || s.length % 4 === 1) return null;
  try {
    const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch (_) {
    return null;
  }
}

/** @param {...(Uint8Array|number[])} parts @returns {Uint8Array} */
export function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Compare without an early exit. @param {Uint8Array} a @param {Uint8Array} b */
export function equal(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/** Byte-wise order (-1, 0, 1). @param {Uint8Array} a @param {Uint8Array} b */
export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

export const utf8 = new TextEncoder();
export const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

/** @param {bigint} v @returns {Uint8Array} 8 bytes big-endian */
export function u64(v) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, v));
  return out;
}

/** @param {number} v @returns {Uint8Array} 4 bytes big-endian */
export function u32(v) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, v);
  return out;
}

/** Thrown for malformed input (the caller maps it to its own error). */
export class FormatError extends Error {
  constructor(message) {
    super(message);
    this.name = "FormatError";
  }
}

/** Appends big-endian integers, varints and bytes. */
export class Writer {
  constructor(size = 256) {
    this.buf = new Uint8Array(size);
    this.len = 0;
  }
  _room(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  /** @param {number} v */
  byte(v) {
    this._room(1);
    this.buf[this.len++] = v & 255;
    return this;
  }
  /** @param {Uint8Array|number[]} b */
  bytes(b) {
    this._room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }
  /** @param {bigint} v */
  u64(v) {
    this._room(8);
    new DataView(this.buf.buffer, this.buf.byteOffset).setBigUint64(this.len, BigInt.asUintN(64, BigInt(v)));
    this.len += 8;
    return this;
  }
  /** @param {number} v */
  u32(v) {
    this._room(4);
    new DataView(this.buf.buffer, this.buf.byteOffset).setUint32(this.len, v);
    this.len += 4;
    return this;
  }
  /** @param {number} v */
  u16(v) {
    return this.byte(v >> 8).byte(v);
  }
  /** Unsigned LEB128. @param {number|bigint} v */
  varint(v) {
    if (typeof v === "number" && v < 2 ** 31) {
      while (v >= 0x80) {
        this.byte((v & 0x7f) | 0x80);
        v >>>= 7;
      }
      return this.byte(v);
    }
    let b = BigInt(v);
    while (b >= 0x80n) {
      this.byte(Number(b & 0x7fn) | 0x80);
      b >>= 7n;
    }
    return this.byte(Number(b));
  }
  /** @returns {Uint8Array} */
  done() {
    return this.buf.slice(0, this.len);
  }
}

/** Reads what Writer writes; every read checks the bytes left. */
export class Reader {
  /** @param {Uint8Array} b */
  constructor(b) {
    this.b = b;
    this.at = 0;
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  get left() {
    return this.b.length - this.at;
  }
  get atEnd() {
    return this.at === this.b.length;
  }
  _need(n) {
    if (n < 0 || this.left < n) throw new FormatError("truncated");
  }
  byte() {
    this._need(1);
    return this.b[this.at++];
  }
  /** @param {number} n */
  bytes(n) {
    this._need(n);
    const out = this.b.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }
  u64() {
    this._need(8);
    const v = this.view.getBigUint64(this.at);
    this.at += 8;
    return v;
  }
  u32() {
    this._need(4);
    const v = this.view.getUint32(this.at);
    this.at += 4;
    return v;
  }
  u16() {
    this._need(2);
    const v = this.view.getUint16(this.at);
    this.at += 2;
    return v;
  }
  /** Unsigned LEB128, at most 10 bytes. @returns {bigint} */
  varintBig() {
    let v = 0n;
    for (let i = 0; i < 10; i++) {
      const c = this.byte();
      v |= BigInt(c & 0x7f) << BigInt(7 * i);
      if ((c & 0x80) === 0) {
        if (v >= 1n << 64n) throw new FormatError("varint overflows 64 bits");
        return v;
      }
    }
    throw new FormatError("varint longer than 10 bytes");
  }
  /** A varint that must fit a safe integer. @returns {number} */
  varint() {
    let v = 0;
    let shift = 1;
    for (let i = 0; i < 10; i++) {
      const c = this.byte();
      v += (c & 0x7f) * shift;
      if ((c & 0x80) === 0) {
        if (!Number.isSafeInteger(v)) throw new FormatError("varint too large");
        return v;
      }
      shift *= 128;
    }
    throw new FormatError("varint longer than 10 bytes");
  }
}

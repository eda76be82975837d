/**
 * The Noise Protocol Framework (revision 34), `Noise_*_25519_AESGCM_SHA256`:
 * the cipher suite a browser can run with WebCrypto alone (docs/PROTOCOL.md,
 * "Cipher suites"; Masq suite 2). XXpsk3 pairs devices, KK renews their
 * sessions. Checked byte for byte against the cacophony vectors.
 * @module masq/peer/noise
 */
import { concat, utf8, FormatError } from "./bytes.js";
import { aesSeal, aesOpen, hkdf, sha256, x25519, x25519Generate, x25519Import, AuthError } from "./crypto.js";

/** Token lists per message (even indexes: initiator -> responder), and pre-messages. */
export const PATTERNS = {
  NN: { pre: [false, false], messages: [["e"], ["e", "ee"]] },
  KK: { pre: [true, true], messages: [["e", "es", "ss"], ["e", "ee", "se"]] },
  IK: { pre: [false, true], messages: [["e", "es", "s", "ss"], ["e", "ee", "se"]] },
  XX: { pre: [false, false], messages: [["e"], ["e", "ee", "s", "es"], ["s", "se"]] },
  NNpsk0: { pre: [false, false], messages: [["psk", "e"], ["e", "ee"]] },
  NKpsk0: { pre: [false, true], messages: [["psk", "e", "es"], ["e", "ee"]] },
  XXpsk3: { pre: [false, false], messages: [["e"], ["e", "ee", "s", "es"], ["s", "se", "psk"]] },
  KKpsk0: { pre: [true, true], messages: [["psk", "e", "es", "ss"], ["e", "ee", "se"]] },
  KKpsk2: { pre: [true, true], messages: [["e", "es", "ss"], ["e", "ee", "se", "psk"]] },
  IKpsk2: { pre: [false, true], messages: [["e", "es", "s", "ss"], ["e", "ee", "se", "psk"]] },
};

export const MAX_MESSAGE = 65535;

/** Noise AESGCM nonce: 32 zero bits then the 64-bit counter, big-endian. */
function nonceBytes(n) {
  const out = new Uint8Array(12);
  new DataView(out.buffer).setBigUint64(4, BigInt(n));
  return out;
}

/** A key and a nonce counter. */
export class CipherState {
  /** @param {Uint8Array|null} key */
  constructor(key = null) {
    this.key = key;
    this.n = 0;
  }
  /** @param {Uint8Array} ad @param {Uint8Array} plaintext */
  async encrypt(ad, plaintext) {
    if (!this.key) return plaintext;
    const out = await aesSeal(this.key, nonceBytes(this.n), ad, plaintext);
    this.n++;
    return out;
  }
  /** @param {Uint8Array} ad @param {Uint8Array} ciphertext */
  async decrypt(ad, ciphertext) {
    if (!this.key) return ciphertext;
    const out = await aesOpen(this.key, nonceBytes(this.n), ad, ciphertext);
    this.n++; // only after the tag verified
    return out;
  }
}

/**
 * One side of a handshake: writeMessage / readMessage in turn until
 * `complete`, then `result()`.
 */
export class Handshake {
  /**
   * @param {Object} o
   * @param {keyof PATTERNS} o.pattern
   * @param {"initiator"|"responder"} o.role
   * @param {Uint8Array} [o.prologue]
   * @param {{privateKey: CryptoKey, publicKey: Uint8Array}} [o.staticKey] - this device's X25519 key pair
   * @param {Uint8Array} [o.remoteStatic] - the peer's static key when the pattern pre-shares it
   * @param {Uint8Array[]} [o.psks]
   * @param {Uint8Array} [o.ephemeral] - a fixed ephemeral private key: test vectors only
   */
  static async create(o) {
    const h = new Handshake();
    const p = PATTERNS[o.pattern];
    if (!p) throw new FormatError(`unknown Noise pattern ${o.pattern}`);
    h.pattern = o.pattern;
    h.p = p;
    h.initiator = o.role === "initiator";
    h.s = o.staticKey || null;
    h.rs = o.remoteStatic || null;
    h.psks = (o.psks || []).slice();
    h.fixedE = o.ephemeral || null;
    h.e = null;
    h.re = null;
    h.next = 0;
    h.failed = false;
    h.pskMode = p.messages.flat().includes("psk");
    const name = utf8.encode(`Noise_${o.pattern}_25519_AESGCM_SHA256`);
    h.h = name.length <= 32 ? concat(name, new Uint8Array(32 - name.length)) : await sha256(name);
    h.ck = h.h;
    h.cipher = new CipherState();
    await h._mixHash(o.prologue || new Uint8Array(0));
    if (p.pre[0]) await h._mixHash(h.initiator ? h.s.publicKey : h.rs);
    if (p.pre[1]) await h._mixHash(h.initiator ? h.rs : h.s.publicKey);
    return h;
  }

  get complete() {
    return this.next === this.p.messages.length;
  }
  /** Whether the next message is this side's to write. */
  get myTurn() {
    return !this.complete && (this.next % 2 === 0) === this.initiator;
  }
  get handshakeHash() {
    return this.h;
  }

  async _mixHash(data) {
    this.h = await sha256(concat(this.h, data));
  }
  async _mixKey(ikm) {
    const out = await hkdf(this.ck, ikm, new Uint8Array(0), 64);
    this.ck = out.slice(0, 32);
    this.cipher = new CipherState(out.slice(32, 64));
  }
  async _mixKeyAndHash(ikm) {
    const out = await hkdf(this.ck, ikm, new Uint8Array(0), 96);
    this.ck = out.slice(0, 32);
    await this._mixHash(out.slice(32, 64));
    this.cipher = new CipherState(out.slice(64, 96));
  }
  async _encryptAndHash(pt) {
    const ct = await this.cipher.encrypt(this.h, pt);
    await this._mixHash(ct);
    return ct;
  }
  async _decryptAndHash(ct) {
    const pt = await this.cipher.decrypt(this.h, ct);
    await this._mixHash(ct);
    return pt;
  }
  async _dh(token) {
    const need = (v, what) => {
      if (!v) throw new FormatError(`${what} missing for ${token}`);
      return v;
    };
    switch (token) {
      case "ee": return x25519(need(this.e, "e").privateKey, need(this.re, "re"));
      case "es": return this.initiator ? x25519(need(this.e, "e").privateKey, need(this.rs, "rs")) : x25519(need(this.s, "s").privateKey, need(this.re, "re"));
      case "se": return this.initiator ? x25519(need(this.s, "s").privateKey, need(this.re, "re")) : x25519(need(this.e, "e").privateKey, need(this.rs, "rs"));
      case "ss": return x25519(need(this.s, "s").privateKey, need(this.rs, "rs"));
      default: throw new FormatError("not a DH token");
    }
  }

  /** @param {Uint8Array} [payload] @returns {Promise<Uint8Array>} */
  async writeMessage(payload = new Uint8Array(0)) {
    if (this.failed) throw new AuthError("handshake already failed");
    if (!this.myTurn) throw new FormatError(this.complete ? "handshake is complete" : "not this side's turn to write");
    try {
      const parts = [];
      for (const t of this.p.messages[this.next]) {
        if (t === "e") {
          this.e = this.fixedE ? await x25519Import(this.fixedE) : await x25519Generate();
          parts.push(this.e.publicKey);
          await this._mixHash(this.e.publicKey);
          if (this.pskMode) await this._mixKey(this.e.publicKey);
        } else if (t === "s") {
          parts.push(await this._encryptAndHash(this.s.publicKey));
        } else if (t === "psk") {
          await this._mixKeyAndHash(this.psks.shift());
        } else {
          await this._mixKey(await this._dh(t));
        }
      }
      parts.push(await this._encryptAndHash(payload));
      const out = concat(...parts);
      if (out.length > MAX_MESSAGE) throw new FormatError("handshake message longer than 65535 bytes");
      this.next++;
      return out;
    } catch (e) {
      this.failed = true;
      throw e;
    }
  }

  /** Process the peer's message; returns its payload. Any failure ends the handshake. */
  async readMessage(message) {
    if (this.failed) throw new AuthError("handshake already failed");
    if (this.complete || this.myTurn) throw new FormatError(this.complete ? "handshake is complete" : "not this side's turn to read");
    if (message.length > MAX_MESSAGE) throw new FormatError("handshake message longer than 65535 bytes");
    try {
      let at = 0;
      for (const t of this.p.messages[this.next]) {
        if (t === "e") {
          if (message.length - at < 32) throw new FormatError("handshake message truncated");
          this.re = message.slice(at, at + 32);
          at += 32;
          await this._mixHash(this.re);
          if (this.pskMode) await this._mixKey(this.re);
        } else if (t === "s") {
          const n = 32 + (this.cipher.key ? 16 : 0);
          if (message.length - at < n) throw new FormatError("handshake message truncated");
          this.rs = await this._decryptAndHash(message.slice(at, at + n));
          at += n;
        } else if (t === "psk") {
          await this._mixKeyAndHash(this.psks.shift());
        } else {
          await this._mixKey(await this._dh(t));
        }
      }
      const payload = await this._decryptAndHash(message.slice(at));
      this.next++;
      return payload;
    } catch (e) {
      this.failed = true;
      throw e;
    }
  }

  /** Transport keys and what the session layer needs. */
  async result() {
    if (!this.complete) throw new FormatError("handshake not complete");
    const out = await hkdf(this.ck, new Uint8Array(0), new Uint8Array(0), 64);
    const c1 = new CipherState(out.slice(0, 32)), c2 = new CipherState(out.slice(32, 64));
    return {
      send: this.initiator ? c1 : c2,
      receive: this.initiator ? c2 : c1,
      handshakeHash: this.h,
      remoteStatic: this.rs,
      chainingKey: this.ck,
      localEphemeral: this.e,
      remoteEphemeral: this.re,
    };
  }
}

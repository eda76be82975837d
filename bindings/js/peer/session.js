/**
 * A session between two devices (as MasqCrypto's SecureSession): a Noise
 * handshake (AESGCM suite) that authenticates both X25519 device keys, then
 * a Double Ratchet seeded from it — root = HKDF(salt: chaining key, ikm:
 * handshake hash, info "masq session v1", 32). The handshake's responder
 * sends the first ratchet message (its first ratchet key pair is fresh, the
 * initiator's first is its Noise ephemeral).
 * @module masq/peer/session
 */
import { utf8, FormatError } from "./bytes.js";
import { hkdf } from "./crypto.js";
import { Handshake, CipherState } from "./noise.js";
import * as ratchet from "./ratchet.js";

export const SUITE_AESGCM = 2;
const SESSION_INFO = utf8.encode("masq session v1");

export class Session {
  /**
   * @param {Object} o - as Handshake.create, plus fixedRatchetKeys (test vectors only)
   * @returns {Promise<Session>}
   */
  static async create(o) {
    const s = new Session();
    s.role = o.role;
    s.handshake = await Handshake.create(o);
    s.fixedRatchetKeys = o.fixedRatchetKeys;
    s.state = null;
    s.peerStatic = null;
    s.handshakeHash = null;
    return s;
  }

  get established() {
    return this.state !== null;
  }
  /** The handshake hash so far (final once established). */
  get transcriptHash() {
    return this.handshake ? this.handshake.handshakeHash : this.handshakeHash;
  }
  get canSend() {
    return this.state !== null && ratchet.canSend(this.state);
  }

  /** @param {Uint8Array} [payload] */
  async writeHandshake(payload) {
    if (!this.handshake) throw new FormatError("the session is not handshaking");
    const m = await this.handshake.writeMessage(payload);
    await this._finish();
    return m;
  }

  /**
   * Read the peer's handshake message. tentative: a message that fails
   * leaves the handshake as it was (the genuine one can still be read).
   * @param {Uint8Array} message @param {boolean} [tentative]
   */
  async readHandshake(message, tentative = false) {
    if (!this.handshake) throw new FormatError("the session is not handshaking");
    const working = tentative ? cloneHandshake(this.handshake) : this.handshake;
    const payload = await working.readMessage(message);
    this.handshake = working;
    await this._finish();
    return payload;
  }

  async _finish() {
    const h = this.handshake;
    if (!h.complete) return;
    const r = await h.result();
    const root = await hkdf(r.chainingKey, r.handshakeHash, SESSION_INFO, 32);
    this.state = this.role === "responder"
      ? await ratchet.initSender(root, r.remoteEphemeral, this.fixedRatchetKeys)
      : ratchet.initReceiver(root, r.localEphemeral, this.fixedRatchetKeys);
    this.peerStatic = r.remoteStatic;
    this.handshakeHash = r.handshakeHash;
    this.handshake = null;
  }

  /** Seal; the state moves on (store it before sending). */
  async seal(plaintext, ad = new Uint8Array(0)) {
    if (!this.state) throw new FormatError("the session is not established");
    const { message, state } = await ratchet.encrypt(this.state, plaintext, ad);
    this.state = state;
    return message;
  }

  /** Open; the state moves on only if the message authenticates. */
  async open(message, ad = new Uint8Array(0)) {
    if (!this.state) throw new FormatError("the session is not established");
    const { plaintext, state } = await ratchet.decrypt(this.state, message, ad);
    this.state = state;
    return plaintext;
  }

  /** What is kept in IndexedDB for an established session. */
  toRecord() {
    if (!this.state) throw new FormatError("only an established session can be saved");
    return { suite: SUITE_AESGCM, role: this.role, peerStatic: this.peerStatic, handshakeHash: this.handshakeHash, state: this.state };
  }

  static fromRecord(r) {
    const s = new Session();
    s.role = r.role;
    s.handshake = null;
    s.peerStatic = r.peerStatic;
    s.handshakeHash = r.handshakeHash;
    s.state = r.state;
    return s;
  }
}

function cloneHandshake(h) {
  const c = Object.assign(Object.create(Object.getPrototypeOf(h)), h);
  c.psks = h.psks.slice();
  c.cipher = Object.assign(new CipherState(), h.cipher);
  return c;
}

/**
 * Pairing this page with another Masq device (docs/SECURITY.md "Pairing",
 * docs/PROTOCOL.md "Pairing frames", "Cipher suites"). The page joins with
 * a link another device printed — `masq://pair/<room>?via=<relay>#<secret>`
 * or the same as a web link `https://<app>#masq-pair=<base64url of it>`
 * (opened by the phone's camera from a QR code) — and speaks only suite 2
 * (AESGCM), the one WebCrypto can run:
 *
 *   1 → SUITES  u8 n(1) · u8 2 · u16 length · XXpsk3 message 1
 *   2 ← CHOSEN  u8 2 · XXpsk3 message 2 (payload: SHA-256 of frame 1)
 *   3 → MESSAGE XXpsk3 message 3 (payload: this device's signed card)
 *   4 ← MESSAGE ratchet message (the offerer's card · 16-byte group room)
 *
 * Prologue "masq pairing v1" ‖ room ‖ u8 n ‖ offered suites; PSK =
 * HKDF(secret, info "masq pairing psk v1"); room = HKDF(secret, info "masq
 * pairing room v1", 16), joined on the relay as hex. A card is
 * `u8 1 · u8 nameLength · name · [32] Ed25519 · [32] X25519 · [64] signature`,
 * the signature over "masq pairing v1" ‖ handshake hash ‖ X25519 ‖ Ed25519 ‖ name.
 * @module masq/peer/pairing
 */
import { concat, hex, utf8, b64url, unb64url, equal, fromUtf8 } from "./bytes.js";
import { hkdf, sha256, ed25519Sign, ed25519Verify } from "./crypto.js";
import { Session } from "./session.js";
import { RelayClient } from "./relay.js";
import { MasqError } from "./errors.js";

export const SUITE = 2;
const FRAME = { MESSAGE: 1, REFUSAL: 2, SUITES: 3, CHOSEN: 4 };
const CARD_LABEL = utf8.encode("masq pairing v1");

/**
 * Parse a pairing link (either form). Rejects with MasqError "invalid" and
 * a reason for anything malformed.
 * @param {string} text
 * @returns {Promise<{secret: Uint8Array, via: string|null, room: Uint8Array}>}
 */
export async function parseLink(text) {
  if (typeof text !== "string" || text.length > 4096) throw new MasqError("invalid", "not a Masq pairing link");
  text = text.trim();
  if (/^https?:\/\//.test(text)) {
    const hash = text.indexOf("#");
    if (hash < 0 || !text.startsWith("#masq-pair=", hash)) {
      throw new MasqError("invalid", "not a Masq pairing link (a web link carries #masq-pair=… after the page's address)");
    }
    const inner = unb64url(text.slice(hash + "#masq-pair=".length));
    let decoded = null;
    try {
      decoded = inner && fromUtf8.decode(inner);
    } catch (_) { /* below */ }
    if (!decoded || !decoded.startsWith("masq://pair/")) throw new MasqError("invalid", "the pairing link is damaged (its #masq-pair= part does not decode)");
    return parseLink(decoded);
  }
  const prefix = "masq://pair/";
  if (!text.startsWith(prefix)) throw new MasqError("invalid", "not a Masq pairing link (it starts with masq://pair/ or is a web link with #masq-pair=)");
  let rest = text.slice(prefix.length);
  const hash = rest.indexOf("#");
  if (hash < 0) throw new MasqError("invalid", "the pairing link has no secret (the part after #)");
  const secret = unb64url(rest.slice(hash + 1));
  rest = rest.slice(0, hash);
  let via = null;
  const q = rest.indexOf("?");
  if (q >= 0) {
    for (const pair of rest.slice(q + 1).split("&")) {
      if (!pair.startsWith("via=")) continue;
      try {
        via = decodeURIComponent(pair.slice(4));
      } catch (_) {
        throw new MasqError("invalid", "the pairing link's via= is not valid");
      }
      if (!via) throw new MasqError("invalid", "the pairing link's via= is not valid");
    }
    rest = rest.slice(0, q);
  }
  if (!secret || secret.length !== 16) throw new MasqError("invalid", "the pairing link's secret is damaged (expected 16 bytes of base64url)");
  const room = await hkdf(new Uint8Array(0), secret, utf8.encode("masq pairing room v1"), 16);
  if (b64url(room) !== rest) throw new MasqError("invalid", "the pairing link is damaged: its room does not match its secret");
  return { secret, via, room };
}

/** @param {{signing: {privateKey: CryptoKey, publicKey: Uint8Array}, agreement: {publicKey: Uint8Array}}} identity */
export async function signedCard(identity, name, handshakeHash) {
  const n = utf8.encode(name).slice(0, 255);
  const sig = await ed25519Sign(identity.signing.privateKey, concat(CARD_LABEL, handshakeHash, identity.agreement.publicKey, identity.signing.publicKey, n));
  return concat([1, n.length], n, identity.signing.publicKey, identity.agreement.publicKey, sig);
}

/** Parse and verify a card; `expected` is the X25519 key the handshake authenticated. */
export async function verifyCard(bytes, handshakeHash, expected) {
  if (bytes.length < 2 || bytes[0] !== 1 || bytes.length !== 2 + bytes[1] + 128) throw new MasqError("denied", "malformed device card");
  const n = bytes[1];
  const nameBytes = bytes.slice(2, 2 + n);
  let name;
  try {
    name = fromUtf8.decode(nameBytes);
  } catch (_) {
    throw new MasqError("denied", "device name is not UTF-8");
  }
  const signing = bytes.slice(2 + n, 34 + n), agreement = bytes.slice(34 + n, 66 + n), sig = bytes.slice(66 + n);
  if (!equal(agreement, expected)) throw new MasqError("denied", "device card names another key than the handshake authenticated");
  if (!(await ed25519Verify(signing, sig, concat(CARD_LABEL, handshakeHash, agreement, signing, nameBytes)))) {
    throw new MasqError("denied", "device card signature is invalid");
  }
  return { name, signing, agreement };
}

/**
 * The joining side, message by message (any transport).
 */
export class JoinFlow {
  /** @param {{secret: Uint8Array, room: Uint8Array}} link @param {import("./identity.js").Identity} identity @param {string} name */
  constructor(link, identity, name) {
    this.link = link;
    this.identity = identity;
    this.name = name;
    this.prologue = concat(CARD_LABEL, link.room, [1, SUITE]);
    this.done = false;
  }

  /** The first frame (SUITES). */
  async start() {
    const psk = await hkdf(new Uint8Array(0), this.link.secret, utf8.encode("masq pairing psk v1"), 32);
    this.session = await Session.create({ pattern: "XXpsk3", role: "initiator", prologue: this.prologue, staticKey: this.identity.agreement, psks: [psk] });
    const m1 = await this.session.writeHandshake();
    const frame = concat([FRAME.SUITES, 1, SUITE, m1.length >> 8, m1.length & 255], m1);
    this.offered = await sha256(frame);
    return frame;
  }

  /**
   * Handle the offerer's frame: `{send}` to answer, or `{paired}` with the
   * offerer's card, the session and the group room.
   */
  async receive(frame) {
    if (this.done) throw new MasqError("invalid", "pairing already finished");
    if (!frame.length || frame.length > 65536) throw new MasqError("invalid", "empty or oversized pairing frame");
    const body = frame.subarray(1);
    if (frame[0] === FRAME.REFUSAL) {
      this.done = true;
      throw new MasqError("denied", `the other device refused: ${new TextDecoder().decode(body.subarray(0, 200))}`);
    }
    try {
      if (!this.session.established) {
        if (frame[0] !== FRAME.CHOSEN || body[0] !== SUITE) throw new MasqError("unsupported", "the other device chose a cipher suite this browser does not speak");
        const echo = await this.session.readHandshake(body.subarray(1));
        if (!equal(echo, this.offered)) throw new MasqError("denied", "what this device offered was altered on the way");
        const card = await signedCard(this.identity, this.name, this.session.transcriptHash);
        return { send: concat([FRAME.MESSAGE], await this.session.writeHandshake(card)) };
      }
      if (frame[0] !== FRAME.MESSAGE) throw new MasqError("invalid", `unexpected pairing frame type ${frame[0]}`);
      const payload = await this.session.open(body, this.prologue);
      if (payload.length <= 16) throw new MasqError("invalid", "the final pairing message is too short");
      const card = await verifyCard(payload.subarray(0, payload.length - 16), this.session.handshakeHash, this.session.peerStatic);
      this.done = true;
      return { paired: { card, session: this.session, groupRoom: payload.slice(payload.length - 16) } };
    } catch (e) {
      this.done = true;
      if (e instanceof MasqError && e.code !== "invalid" && e.code !== "denied") throw e;
      throw new MasqError("denied", `pairing failed: the other device does not hold this link's secret, or the link is damaged (${e.message})`);
    }
  }
}

/**
 * Join through the link's relay (or `relayUrl`): the whole exchange within `timeout` ms.
 * @returns {Promise<{card: {name: string, signing: Uint8Array, agreement: Uint8Array}, session: Session, groupRoom: Uint8Array, relay: string}>}
 */
export async function joinOverRelay(link, identity, name, { relayUrl, timeout = 60000, WebSocketImpl } = {}) {
  const url = relayUrl || link.via;
  if (!url) throw new MasqError("invalid", "the link does not say which relay to use (no via=)");
  if (!/^wss?:\/\//.test(url)) throw new MasqError("unsupported", `a browser pairs through a relay (ws:// or wss://), not ${url.split(":")[0]}:`);
  const room = hex(link.room);
  const flow = new JoinFlow(link, identity, name);
  return new Promise((resolve, reject) => {
    let busy = Promise.resolve();
    let settled = false;
    const finish = (err, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      setTimeout(() => relay.close(), 200);
      err ? reject(err) : resolve(value);
    };
    const timer = setTimeout(() => finish(new MasqError("timeout", `no answer from the other device through ${url} (is it still waiting with its link?)`)), timeout);
    let started = false;
    const relay = new RelayClient(url, {
      onUp: () => {
        if (started) return;
        started = true;
        busy = busy.then(async () => relay.send(room, await flow.start())).catch((e) => finish(e));
      },
      onDown: (why) => { if (!started) finish(new MasqError("unavailable", `cannot reach the relay at ${url} (${why})`)); },
      onFrame: (r, frame) => {
        if (r !== room) return;
        busy = busy.then(async () => {
          if (settled) return;
          const step = await flow.receive(frame);
          if (step.send) relay.send(room, step.send);
          else finish(null, { ...step.paired, relay: url });
        }).catch((e) => {
          relay.send(room, concat([FRAME.REFUSAL], utf8.encode(String(e.message).slice(0, 200))));
          finish(e instanceof MasqError ? e : new MasqError("denied", String(e && e.message)));
        });
      },
      onError: (code, message) => { if (code === 2) finish(new MasqError("unsupported", `the relay refused: ${message}`)); },
    });
    relay.join(room);
  });
}

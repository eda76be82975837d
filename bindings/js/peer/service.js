/**
 * Sync over a relay (as MasqKernel's SyncService): joins the group's room,
 * learns which paired devices are present, seals every sync frame with the
 * Double Ratchet session of the pair, renews sessions with Noise KK, and
 * feeds the sync engine. Everything runs one step at a time (a promise
 * queue), as the Swift service runs on one serial queue.
 *
 * Room payloads (docs/PROTOCOL.md section 2):
 *   1 SEALED  [10] recipient · [10] sender · ratchet message (AD = room · type · recipient · sender)
 *   2 PRESENT [10] sender        3 WHO [10] sender
 *   4 RENEW   [10] recipient · [10] sender · u8 step (1, 2) · Noise KK message
 *
 * A session is never sealed with before it was renewed in this run (a
 * store restored from a copy must not reuse a message key); at most 200
 * messages go to a device that does not answer; a failing session is
 * renewed (2 s, doubling to 60 s).
 * @module masq/peer/service
 */
import { concat, hex, unhex, utf8, equal, u64, Writer } from "./bytes.js";
import { Session } from "./session.js";
import { SyncEngine } from "./engine.js";
import { RelayClient } from "./relay.js";
import * as frames from "./frames.js";

export const MAX_UNANSWERED = 200;
const RENEWAL_INTERVAL = 2000, MAX_RENEWAL_INTERVAL = 60000;
const RENEWAL_SLACK = 10 * 60000;
export const SEALING_OVERHEAD = 1 + 10 + 10 + 41 + 16 + 183;
const FRAGMENT_HEADER = 14;
const RELAY_MAX_FRAME = 1 << 20;
const RENEW_LABEL = utf8.encode("masq session renewal v1");

class PeerSession {
  constructor() {
    this.state = "stale"; // "stale" | "renewing" | "ready"
    this.renewal = null;
    this.unanswered = 0;
    this.lastRenewal = 0;
    this.renewalWait = RENEWAL_INTERVAL;
    this.failures = 0;
    this.attempts = 0;
    this.lastAnswered = 0;
    this.problem = null;
  }
}

export class SyncService {
  /**
   * @param {Object} o
   * @param {import("./store.js").PeerStore} o.store
   * @param {import("./identity.js").Identity} o.identity
   * @param {string} o.deviceId - this device's id (hex)
   * @param {Uint8Array} o.room - the group room (16 bytes)
   * @param {string} o.relay - ws:// URL
   * @param {() => Promise<Map<string, Object>>} o.devices - the paired devices by id
   * @param {(id: string) => Promise<void>} o.forget - forget a removed device
   * @param {(event: Object) => void} [o.onEvent] - "state", "problem", "progress", "garbage"
   */
  constructor(o) {
    this.o = o;
    this.store = o.store;
    this.engine = new SyncEngine(o.store, { maxBytesPerFrame: RELAY_MAX_FRAME - SEALING_OVERHEAD - FRAGMENT_HEADER });
    this.fragmentBytes = this.engine.options.maxBytesPerFrame;
    this.room = o.room;
    this.roomText = hex(o.room);
    this.me = unhex(o.deviceId);
    this.present = new Set();
    this.helloed = new Set();
    /** @type {Map<string, PeerSession>} */
    this.sessions = new Map();
    /** @type {Map<string, Session>} live sessions (the stored ones, cached) */
    this.cache = new Map();
    this.reassembly = new Map();
    this.nextMessageId = 0;
    this.framesReceived = 0;
    this.framesRejected = 0;
    this.queue = Promise.resolve();
    this.stopped = false;
    this.devices = new Map();
    this.engine.onProgress = (p) => this._event({ type: "progress", ...p });
    this.engine.onProblem = (device, problem) => this._event({ type: "problem", device, problem });
    this.engine.members = () => [...this.devices.keys()];
  }

  _event(e) {
    if (this.o.onEvent) {
      try {
        this.o.onEvent(e);
      } catch (err) {
        setTimeout(() => { throw err; });
      }
    }
  }

  /** Run `fn` after everything queued before it (one step at a time). */
  _serial(fn) {
    const p = this.queue.then(() => (this.stopped ? undefined : fn()));
    this.queue = p.catch((e) => this._event({ type: "error", message: String(e && e.message) }));
    return p;
  }

  async start() {
    this.devices = await this.o.devices();
    this.relay = new RelayClient(this.o.relay, {
      onUp: () => this._serial(() => { this.present.clear(); this.helloed.clear(); this._event({ type: "state", connected: true }); return this._announce(true); }),
      onDown: (why) => this._serial(() => { this.present.clear(); this.helloed.clear(); this._event({ type: "state", connected: false, why }); }),
      onPresence: (room) => { if (room === this.roomText) this._serial(() => { this.present.clear(); this.helloed.clear(); return this._announce(true); }); },
      onFrame: (room, payload) => { if (room === this.roomText) this._serial(() => this._received(payload)); },
      onGarbage: (what) => { this.framesRejected++; this._event({ type: "garbage", what }); },
      onError: (code, message) => this._event({ type: "relay-error", code, message }),
    });
    this.relay.join(this.roomText);
    this._unlisten = (() => {
      const l = (changes) => { if (changes.some((c) => c.origin === "local")) this.schedulePump(); };
      this.store.listeners.add(l);
      return () => this.store.listeners.delete(l);
    })();
    this._timer = setInterval(() => this._serial(() => this._poll()), 500);
  }

  stop() {
    this.stopped = true;
    clearInterval(this._timer);
    clearTimeout(this._pumpTimer);
    if (this._unlisten) this._unlisten();
    if (this.relay) this.relay.close();
  }

  get connected() {
    return !!(this.relay && this.relay.up);
  }

  /** Paired devices changed (pairing, removal). */
  async refreshDevices() {
    await this._serial(async () => {
      this.devices = await this.o.devices();
      await this._announce(true);
    });
  }

  async status() {
    const engine = new Map((await this.engine.status()).map((s) => [s.device, s]));
    const rows = [];
    for (const [id, d] of this.devices) {
      const e = engine.get(id);
      const s = this.sessions.get(id);
      rows.push({ deviceId: id, name: d.name, present: this.present.has(id), theyLack: e ? e.theyLack : 0, weLack: e ? e.weLack : 0,
        lastSeen: e ? e.lastSeen : 0, problem: (e && e.problem) || (s && s.problem) || null });
    }
    return { connected: this.connected, room: this.roomText, devices: rows, pending: rows.filter((r) => r.present).reduce((a, r) => a + r.theyLack, 0),
      framesReceived: this.framesReceived, framesRejected: this.framesRejected + this.engine.rejectedFrames,
      relay: this.relay ? { ...this.relay.stats } : null };
  }

  _peer(device) {
    let s = this.sessions.get(device);
    if (!s) this.sessions.set(device, (s = new PeerSession()));
    return s;
  }

  _broadcast(payload) {
    if (!this.relay.send(this.roomText, payload)) return "the relay connection's queue is full";
    return null;
  }

  _announce(who) {
    this._broadcast(concat([who ? 3 : 2], this.me));
  }

  _reject(why) {
    this.framesRejected++;
    this._event({ type: "rejected", why });
  }

  async _session(device) {
    let s = this.cache.get(device);
    if (s) return s;
    const r = await this.store.getMeta("session:" + device);
    if (!r) return null;
    s = Session.fromRecord(r);
    this.cache.set(device, s);
    return s;
  }

  async _saveSession(device, s) {
    await this.store.putMeta("session:" + device, s.toRecord());
    this.cache.set(device, s);
  }

  async _received(payload) {
    if (!payload.length) return;
    this.framesReceived++;
    const type = payload[0];
    switch (type) {
      case 2:
      case 3: {
        if (payload.length !== 11) return this._reject("malformed presence");
        const sender = hex(payload.subarray(1));
        if (equal(payload.subarray(1), this.me) || !this.devices.has(sender)) return;
        const added = !this.present.has(sender);
        this.present.add(sender);
        if (type === 3 || added) this._broadcast(concat([2], this.me));
        return this._greet(sender);
      }
      case 1: {
        if (payload.length <= 21 || !equal(payload.subarray(1, 11), this.me)) return;
        const sender = hex(payload.subarray(11, 21));
        if (!this.devices.has(sender)) return this._reject("frame from an unpaired device");
        this.present.add(sender);
        const peer = this._peer(sender);
        const session = await this._session(sender);
        let plain;
        try {
          if (!session) throw new Error("no session");
          // Opened on a copy: the stored state moves only if the message authenticates.
          const working = Session.fromRecord(session.toRecord());
          plain = await working.open(payload.subarray(21), concat(this.room, payload.subarray(0, 21)));
          await this._saveSession(sender, working);
        } catch (e) {
          peer.failures++;
          this._reject(`from ${sender}: ${e.message}`);
          if (peer.failures >= 2 || !/authentication|replayed/.test(String(e.message))) {
            peer.problem = "messages from it do not open; renewing the session";
            await this._renew(sender, true);
          }
          return;
        }
        peer.failures = 0;
        peer.unanswered = 0;
        if (peer.state === "ready" && peer.problem && peer.problem.startsWith("messages from it")) peer.problem = null;
        if (!this.helloed.has(sender)) await this._hello(sender);
        const whole = this._reassemble(plain, sender);
        if (!whole) return;
        if (whole.length >= 2 && whole[0] === frames.VERSION && whole[1] === frames.T.REMOVALS) return this._removals(whole, sender);
        try {
          for (const reply of await this.engine.receive(whole, sender)) await this._deliver(reply, sender);
          await this._pump();
        } catch (e) {
          this._reject(`from ${sender}: ${e.message}`);
        }
        if (this.store.identityEpoch !== this._epoch) {
          this._epoch = this.store.identityEpoch;
          for (const d of this.present) { this.helloed.delete(d); await this._greet(d); }
        }
        return;
      }
      case 4: {
        if (payload.length <= 22 || !equal(payload.subarray(1, 11), this.me)) return;
        const sender = hex(payload.subarray(11, 21));
        if (!this.devices.has(sender)) return this._reject("renewal from an unpaired device");
        this.present.add(sender);
        return this._renewal(sender, payload[21], payload.slice(22));
      }
      default:
        return this._reject(`unknown payload type ${type}`);
    }
  }

  async _greet(device) {
    const peer = this._peer(device);
    if (peer.state === "ready") {
      if (!this.helloed.has(device)) await this._hello(device);
    } else if (peer.state === "stale") await this._renew(device, false);
  }

  _prologue(initiator, responder) {
    return concat(RENEW_LABEL, this.room, initiator, responder);
  }

  async _counters(device) {
    return (await this.store.getMeta("renewal:" + device)) || { sent: 0n, accepted: 0n };
  }

  async _renew(device, force) {
    const peer = this._peer(device);
    const now = Date.now();
    if (peer.lastRenewal !== 0 && now < peer.lastRenewal + peer.renewalWait) return;
    const d = this.devices.get(device);
    if (!d) return;
    try {
      const counters = await this._counters(device);
      // A last counter more than the slack ahead of this clock was refused (never
      // accepted): once the clock is set right, do not continue from it (docs/PROTOCOL.md).
      const last = counters.sent > BigInt(now + RENEWAL_SLACK) ? 0n : counters.sent;
      const counter = BigInt(now) > last ? BigInt(now) : last + 1n;
      const session = await Session.create({ pattern: "KK", role: "initiator", prologue: this._prologue(this.me, unhex(device)),
        staticKey: this.o.identity.agreement, remoteStatic: d.agreement });
      const message = await session.writeHandshake(u64(counter));
      await this.store.putMeta("renewal:" + device, { sent: counter, accepted: counters.accepted });
      if (peer.lastRenewal !== 0) peer.renewalWait = Math.min(peer.renewalWait * 2, MAX_RENEWAL_INTERVAL);
      peer.lastRenewal = now;
      peer.attempts++;
      peer.state = "renewing";
      peer.renewal = session;
      this.helloed.delete(device);
      this._broadcast(concat([4], unhex(device), this.me, [1], message));
    } catch (e) {
      peer.problem = `cannot renew the session: ${e.message}`;
    }
  }

  async _renewal(sender, step, message) {
    const peer = this._peer(sender);
    const senderId = unhex(sender);
    const d = this.devices.get(sender);
    try {
      if (step === 1) {
        // Both started at once: the smaller device id's renewal goes on (unless it keeps failing).
        if (peer.state === "renewing" && compare(this.me, senderId) < 0 && peer.attempts < 3) return;
        const now = Date.now();
        if (now < peer.lastAnswered + 1000) return this._reject(`renewal from ${sender}: answered one less than a second ago`);
        peer.lastAnswered = now;
        const session = await Session.create({ pattern: "KK", role: "responder", prologue: this._prologue(senderId, this.me),
          staticKey: this.o.identity.agreement, remoteStatic: d.agreement });
        const payload = await session.readHandshake(message);
        if (payload.length !== 8) throw new Error("a session renewal without its counter");
        const counter = new DataView(payload.buffer, payload.byteOffset).getBigUint64(0);
        const counters = await this._counters(sender);
        if (counter <= counters.accepted) throw new Error(`a replayed session renewal from ${sender}`);
        if (counter > BigInt(now + RENEWAL_SLACK)) throw new Error(`a session renewal from ${sender} whose counter is ahead of this device's clock`);
        const answer = await session.writeHandshake();
        await this._saveSession(sender, session);
        await this.store.putMeta("renewal:" + sender, { sent: counters.sent, accepted: counter });
        this._broadcast(concat([4], senderId, this.me, [2], answer));
        this._established(sender, peer);
        await this._hello(sender);
      } else if (step === 2) {
        if (peer.state !== "renewing" || !peer.renewal) return;
        await peer.renewal.readHandshake(message, true);
        if (!peer.renewal.established) throw new Error("the session renewal did not complete");
        await this._saveSession(sender, peer.renewal);
        this._established(sender, peer);
      } else {
        throw new Error(`unknown renewal step ${step}`);
      }
    } catch (e) {
      this._reject(`renewal from ${sender}: ${e.message}`);
      if (step === 1) peer.problem = `its session renewal was refused: ${e.message}`;
    }
  }

  _established(device, peer) {
    peer.state = "ready";
    peer.renewal = null;
    peer.unanswered = 0;
    peer.failures = 0;
    peer.attempts = 0;
    peer.renewalWait = RENEWAL_INTERVAL;
    peer.lastRenewal = Date.now();
    peer.problem = null;
    this.helloed.delete(device);
    this.engine.disconnected(device);
  }

  async _hello(device) {
    try {
      if (await this._deliver(await this.engine.connected(device), device)) {
        this.helloed.add(device);
      }
    } catch (e) {
      this._event({ type: "error", message: `cannot greet ${device}: ${e.message}` });
    }
  }

  async _poll() {
    const now = Date.now();
    for (const device of this.present) {
      const peer = this._peer(device);
      if (peer.state === "stale") await this._renew(device, false);
      else if (peer.state === "renewing") { if (now >= peer.lastRenewal + peer.renewalWait) await this._renew(device, true); }
      else {
        const s = await this._session(device);
        if (s && !s.canSend && now >= peer.lastRenewal + 5000) await this._renew(device, true);
        // Greeted, but its HELLO never came (lost, or eaten by a crossing renewal):
        // renew, after which the answering side greets first (as the Swift service).
        // Three times in a row: try only once a minute (a peer refusing our HELLO, a relay dropping it).
        else if (this.helloed.has(device) && !this.engine.heardFrom([device])) {
          if (now >= peer.lastRenewal + ((peer.missingHello || 0) >= 3 ? 60000 : 5000)) {
            peer.missingHello = (peer.missingHello || 0) + 1;
            if (peer.missingHello >= 3) peer.problem = "its greeting (HELLO) does not arrive after a session renewal; trying again every minute";
            await this._renew(device, true);
          }
        } else if (this.engine.heardFrom([device]) && peer.missingHello) peer.missingHello = 0;
      }
    }
    this.engine.resendStalled();
    await this._pump();
  }

  schedulePump() {
    if (this._pumpTimer) return;
    this._pumpTimer = setTimeout(() => {
      this._pumpTimer = null;
      this._serial(() => this._pump());
    }, 5);
  }

  async _pump() {
    for (const [device, frame] of await this.engine.pending()) if (this.present.has(device)) await this._deliver(frame, device);
  }

  /** Seal for `device` and send; false (nothing sent) while its session is not renewed or it does not answer. */
  async _deliver(frame, device) {
    if (frame.length <= this.fragmentBytes) return this._deliverOne(frame, device, true);
    this.nextMessageId = (this.nextMessageId + 1) >>> 0;
    const part = this.fragmentBytes - FRAGMENT_HEADER;
    const count = Math.ceil(frame.length / part);
    for (let i = 0; i < count; i++) {
      const f = new Writer(FRAGMENT_HEADER + part).byte(frames.VERSION).byte(frames.T.FRAGMENT).u32(this.nextMessageId).u32(i).u32(count)
        .bytes(frame.subarray(i * part, (i + 1) * part)).done();
      if (!(await this._deliverOne(f, device, i === 0))) return false;
    }
    return true;
  }

  async _deliverOne(frame, device, counted) {
    const peer = this._peer(device);
    if (peer.state !== "ready") {
      await this._renew(device, false);
      return false;
    }
    if (counted && peer.unanswered >= MAX_UNANSWERED) {
      peer.problem = `it has not answered ${MAX_UNANSWERED} messages; renewing the session`;
      await this._renew(device, true);
      return false;
    }
    const session = await this._session(device);
    if (!session || !session.canSend) return false;
    const header = concat([1], unhex(device), this.me);
    const working = Session.fromRecord(session.toRecord());
    const sealed = await working.seal(frame, concat(this.room, header));
    // Stored before it leaves: a message key is never used twice.
    await this._saveSession(device, working);
    if (counted) peer.unanswered++;
    const failure = this._broadcast(concat(header, sealed));
    if (failure) {
      peer.problem = failure;
      return false;
    }
    return true;
  }

  _reassemble(plain, sender) {
    if (plain.length < 2 || plain[0] !== frames.VERSION || plain[1] !== frames.T.FRAGMENT) return plain;
    if (plain.length <= FRAGMENT_HEADER) {
      this._reject(`from ${sender}: truncated fragment`);
      return null;
    }
    const dv = new DataView(plain.buffer, plain.byteOffset);
    const id = dv.getUint32(2), index = dv.getUint32(6), count = dv.getUint32(10);
    const body = plain.slice(FRAGMENT_HEADER);
    if (count < 2 || index >= count || count > frames.MAX_FRAME / (16 << 10) + 1) {
      this._reject(`from ${sender}: fragment ${index} of ${count}`);
      return null;
    }
    let m = this.reassembly.get(sender);
    if (!m || m.id !== id || m.count !== count) m = { id, count, parts: new Map(), bytes: 0 };
    if (m.parts.has(index)) return null;
    if (m.bytes + body.length > frames.MAX_FRAME) {
      this.reassembly.delete(sender);
      this._reject(`from ${sender}: a message past ${frames.MAX_FRAME} bytes`);
      return null;
    }
    m.parts.set(index, body);
    m.bytes += body.length;
    if (m.parts.size < count) {
      this.reassembly.set(sender, m);
      return null;
    }
    this.reassembly.delete(sender);
    return concat(...[...Array(count).keys()].map((i) => m.parts.get(i)));
  }

  /** REMOVALS: u8 version · 7 · u16 n · n × (10 removed · 10 remover · u64 ms). */
  async _removals(frame, sender) {
    if (frame.length < 4) return this._reject(`from ${sender}: malformed removals`);
    const n = (frame[2] << 8) | frame[3];
    if (n > 4096 || frame.length !== 4 + n * 28) return this._reject(`from ${sender}: malformed removals`);
    for (let i = 0; i < n; i++) {
      const at = 4 + i * 28;
      const removed = hex(frame.subarray(at, at + 10)), remover = hex(frame.subarray(at + 10, at + 20));
      const when = new DataView(frame.buffer, frame.byteOffset + at + 20).getBigUint64(0);
      if (equal(unhex(removed), this.me) || removed === sender || removed === remover) continue;
      const d = this.devices.get(removed);
      if (!d || BigInt(d.pairedAt) > when) continue;
      await this.o.forget(removed);
      this.devices.delete(removed);
      this.present.delete(removed);
      this.sessions.delete(removed);
      this.cache.delete(removed);
      this._event({ type: "removed", device: removed, by: remover });
    }
  }
}

function compare(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

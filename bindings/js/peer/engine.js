/**
 * The sync engine (as MasqKernel's SyncEngine): one conversation per peer
 * device over frames that may be late, duplicated or lost — every step is
 * idempotent and a reconnect starts over from what the other side says.
 *
 * On connect each side says HELLO with its version vector; each then sends
 * the other the commits it lacks, in batches of at most 1,000 commits or
 * 1 MiB, at most `window` unacknowledged; ACKs carry the receiver's vector.
 * A peer behind this replica's collection horizon first gets a snapshot.
 * A commit that cannot be applied is answered once with REFUSED.
 * @module masq/peer/engine
 */
import * as frames from "./frames.js";
import { mergeVector, CLOCK_BOUND } from "./store.js";
import { hex } from "./bytes.js";

export const OPTIONS = { maxCommitsPerFrame: 1000, maxBytesPerFrame: 1 << 20, window: 4, collectEvery: 64, resendAfter: 5000 };
const REFUSAL_BACKOFF = 15000, MAX_REFUSAL_BACKOFF = 300000;

class Peer {
  constructor() {
    this.connected = false;
    this.theirs = new Map();
    this.announced = new Map();
    this.sent = new Map();
    this.helloReceived = false;
    this.inFlight = 0;
    this.waitingSince = 0;
    this.receivedCommits = 0;
    this.snapshotKeys = null;
    this.lastSeen = 0;
    /** origin -> {until, backoff} */
    this.heldBack = new Map();
    this.snapshotRequested = false;
    this.refusedByPeer = null;
    this.refusedFromPeer = null;
  }
}

export class SyncEngine {
  /** @param {import("./store.js").PeerStore} store @param {Object} [options] */
  constructor(store, options = {}) {
    this.store = store;
    this.options = { ...OPTIONS, ...options };
    /** @type {Map<string, Peer>} */
    this.peers = new Map();
    this.acks = 0;
    this.rejectedFrames = 0;
    /** Devices whose acknowledgements gate tombstone collection. */
    this.members = () => [...this.peers.keys()];
    /** @type {((p: {device: string, received: number, remaining: number}) => void)|null} */
    this.onProgress = null;
    /** @type {((device: string, problem: string|null) => void)|null} */
    this.onProblem = null;
  }

  _peer(device) {
    let p = this.peers.get(device);
    if (!p) this.peers.set(device, (p = new Peer()));
    return p;
  }

  async _hello() {
    const { applied, collected, tips } = await this.store.vectors();
    return frames.encode({ type: "hello", replica: this.store.replica, applied, collected, tips, wantsSnapshot: false });
  }

  /** A peer became reachable: the HELLO to send it. */
  async connected(device) {
    const p = this._peer(device);
    p.connected = true;
    p.helloReceived = false;
    p.inFlight = 0;
    p.snapshotKeys = null;
    return this._hello();
  }

  disconnected(device) {
    const p = this.peers.get(device);
    if (p) {
      p.connected = false;
      p.helloReceived = false;
    }
  }

  /**
   * Handle a frame from `device`; returns the frames to send back.
   * A malformed frame throws and changes nothing.
   * @param {Uint8Array} bytes @param {string} device @returns {Promise<Uint8Array[]>}
   */
  async receive(bytes, device) {
    let f;
    try {
      f = frames.decode(bytes);
    } catch (e) {
      this.rejectedFrames++;
      throw e;
    }
    const p = this._peer(device);
    p.connected = true;
    p.lastSeen = Date.now();
    switch (f.type) {
      case "hello": {
        const out = [];
        if (await this.store.peerShowsRollback(f.applied, f.tips)) {
          const acks = await this.store.acks(this.members());
          let agreed = 0n;
          for (const a of acks) if ((a.get(this.store.replica) || 0n) > agreed) agreed = a.get(this.store.replica);
          await this.store.reidentify(agreed);
          out.push(await this._hello());
        }
        p.helloReceived = true;
        p.theirs = new Map(f.applied);
        p.announced = new Map(f.applied);
        p.sent = new Map(f.applied);
        p.inFlight = 0;
        p.snapshotRequested = f.wantsSnapshot;
        await this.store.recordAck(device, f.applied);
        await this._resolveRefusal(device, p);
        return out.concat(await this._pump(device, p));
      }
      case "commits": {
        let gap = false, received = 0, refusal = null;
        const appliedOrigins = new Set();
        const bound = this.options.clockBound || CLOCK_BOUND;
        // Checked first: a commit that cannot be applied is refused, later ones of its origin skipped.
        const batch = [];
        for (const c of f.commits) {
          if (refusal && refusal.origin === c.origin) continue;
          const reason = this.store.checkCommit(c, bound);
          if (reason) {
            let latest = c.ts;
            for (const r of c.records) if (r.ts > latest) latest = r.ts;
            refusal = refusal || { type: "refused", reason, origin: c.origin, seq: c.seq, ts: latest, receiverTime: BigInt(Date.now()) };
            this.rejectedFrames++;
            continue;
          }
          batch.push(c);
        }
        try {
          const results = await this.store.applyCommits(batch);
          results.forEach((r, i) => {
            if (r === "applied") {
              received++;
              appliedOrigins.add(batch[i].origin);
            } else if (r === "gap") gap = true;
          });
        } catch (e) {
          // The store could not take them (quota, I/O): refused, the sender keeps them and offers again later.
          if (batch.length && !refusal) {
            const c = batch[0];
            refusal = { type: "refused", reason: 3, origin: c.origin, seq: c.seq, ts: c.ts, receiverTime: BigInt(Date.now()) };
          }
          this.lastStorageError = e;
        }
        const was = p.refusedFromPeer;
        if (refusal) p.refusedFromPeer = refusal;
        else if (was && appliedOrigins.has(was.origin)) p.refusedFromPeer = null;
        if (p.refusedFromPeer !== was && this.onProblem) this.onProblem(device, p.refusedFromPeer ? describe(p.refusedFromPeer, false) : null);
        p.receivedCommits += received;
        const { applied } = await this.store.vectors();
        this._report(device, p, applied);
        const out = [frames.encode({ type: "ack", applied })];
        if (refusal) out.push(frames.encode(refusal));
        else if (gap) out.push(await this._hello());
        return out;
      }
      case "refused": {
        const now = Date.now();
        const held = p.heldBack.get(f.origin);
        const backoff = held ? Math.min(held.backoff * 2, MAX_REFUSAL_BACKOFF) : REFUSAL_BACKOFF;
        p.heldBack.set(f.origin, { until: now + backoff, backoff });
        p.refusedByPeer = f;
        p.inFlight = 0;
        p.sent = new Map(p.theirs);
        if (this.onProblem) this.onProblem(device, describe(f, true));
        return this._pump(device, p);
      }
      case "ack": {
        mergeVector(p.theirs, f.applied);
        p.inFlight = Math.max(0, p.inFlight - 1);
        p.waitingSince = Date.now();
        if (p.inFlight === 0) p.sent = new Map(p.theirs);
        this.acks++;
        await this.store.recordAck(device, f.applied);
        await this._resolveRefusal(device, p);
        if (this.acks % Math.max(this.options.collectEvery, 1) === 0) await this.collectGarbage();
        return this._pump(device, p);
      }
      case "snapshot": {
        const keys = p.snapshotKeys || new Set();
        for (const r of f.records) keys.add(r.ns + "\u0000" + hex(r.key));
        p.snapshotKeys = f.final ? null : keys;
        if (this.store.futureSkew(f.records.map((r) => r.ts), this.options.clockBound || CLOCK_BOUND) !== null) {
          throw new Error("snapshot records timestamped beyond the clock bound");
        }
        await this.store.applySnapshotRecords(f.records);
        if (!f.final) return [];
        await this.store.finishSnapshot(f.final, keys);
        const { applied } = await this.store.vectors();
        this._report(device, p, applied);
        return [frames.encode({ type: "ack", applied })];
      }
    }
    return [];
  }

  async _resolveRefusal(device, p) {
    const r = p.refusedByPeer;
    if (!r) return;
    const { applied } = await this.store.vectors();
    const theirs = p.theirs.get(r.origin) || 0n;
    if (theirs >= r.seq || theirs >= (applied.get(r.origin) || 0n)) {
      p.refusedByPeer = null;
      p.heldBack.delete(r.origin);
      if (this.onProblem) this.onProblem(device, null);
    }
  }

  /** Frames to push to every connected peer after local writes. */
  async pending() {
    const out = [];
    for (const [device, p] of [...this.peers].sort()) {
      if (!p.connected || !p.helloReceived) continue;
      for (const f of await this._pump(device, p)) out.push([device, f]);
    }
    return out;
  }

  /** Give up on frames unacknowledged too long; offer refused origins again once their wait is over. */
  resendStalled() {
    const now = Date.now();
    let any = false;
    for (const p of this.peers.values()) {
      if (!p.connected) continue;
      if (p.inFlight > 0 && now >= p.waitingSince + this.options.resendAfter) {
        p.inFlight = 0;
        p.sent = new Map(p.theirs);
        any = true;
      }
      for (const [origin, hold] of p.heldBack) {
        if (hold.until !== 0 && hold.until <= now) {
          p.heldBack.set(origin, { until: 0, backoff: hold.backoff });
          any = true;
        }
      }
    }
    return any;
  }

  async collectGarbage() {
    return this.store.collectGarbage(await this.store.acks(this.members()));
  }

  heardFrom(devices) {
    return [...devices].every((d) => this.peers.get(d) && this.peers.get(d).helloReceived);
  }

  /** Per peer: what it still lacks from us and we from it (commits). */
  async status() {
    const { applied } = await this.store.vectors();
    const out = [];
    for (const [device, p] of this.peers) {
      let theyLack = 0n, weLack = 0n;
      for (const [r, s] of applied) if (s > (p.theirs.get(r) || 0n)) theyLack += s - (p.theirs.get(r) || 0n);
      for (const [r, s] of p.announced) if (s > (applied.get(r) || 0n)) weLack += s - (applied.get(r) || 0n);
      out.push({ device, connected: p.connected, theyLack: Number(theyLack), weLack: Number(weLack), lastSeen: p.lastSeen,
        problem: p.refusedByPeer ? describe(p.refusedByPeer, true) : p.refusedFromPeer ? describe(p.refusedFromPeer, false) : null });
    }
    return out;
  }

  async _pump(device, p) {
    const out = [];
    for (;;) {
      if (!p.helloReceived || p.inFlight >= this.options.window) return out;
      if (p.snapshotRequested) {
        p.snapshotRequested = false;
        out.push(...(await this._snapshot(p)));
        continue;
      }
      const now = Date.now();
      const held = new Set([...p.heldBack].filter(([, h]) => h.until > now).map(([o]) => o));
      const commits = await this.store.exportCommits(p.sent, this.options.maxCommitsPerFrame, this.options.maxBytesPerFrame, held);
      if (commits === null) {
        out.push(...(await this._snapshot(p)));
        continue;
      }
      if (!commits.length) return out;
      for (const c of commits) if (c.seq > (p.sent.get(c.origin) || 0n)) p.sent.set(c.origin, c.seq);
      if (p.inFlight === 0) p.waitingSince = Date.now();
      p.inFlight++;
      out.push(frames.encode({ type: "commits", commits }));
    }
  }

  async _snapshot(p) {
    const { applied } = await this.store.vectors();
    const out = [];
    let cursor = null;
    do {
      const chunk = await this.store.snapshotChunk(cursor, this.options.maxBytesPerFrame);
      cursor = chunk.next;
      out.push(frames.encode({ type: "snapshot", records: chunk.records, final: cursor ? null : applied }));
    } while (cursor);
    p.sent = new Map(applied);
    if (p.inFlight === 0) p.waitingSince = Date.now();
    p.inFlight++;
    return out;
  }

  _report(device, p, mine) {
    if (!this.onProgress) return;
    let remaining = 0n;
    for (const [r, s] of p.announced) if (s > (mine.get(r) || 0n)) remaining += s - (mine.get(r) || 0n);
    this.onProgress({ device, received: p.receivedCommits, remaining: Number(remaining) });
  }
}

/** A refusal in words: `mine` on the side whose commit was refused. */
export function describe(r, mine) {
  switch (r.reason) {
    case 1: {
      const ahead = Number((r.ts >> 16n) - r.receiverTime);
      const minutes = Math.max(1, Math.round(ahead / 60000));
      return mine ? `your clock is ${minutes} minute(s) ahead of this device's: it refuses your changes until the clocks agree`
        : `refusing its changes: its clock is ${minutes} minute(s) ahead of this device's`;
    }
    case 2: return mine ? "it refuses a change that exceeds its limits" : "refusing a change that exceeds this store's limits";
    case 3: return mine ? "it cannot store your changes (full storage or I/O error)" : "cannot store its changes (this browser's storage for the site is full)";
    default: return mine ? "it refuses one of your changes as invalid" : "refusing one of its changes as invalid";
  }
}

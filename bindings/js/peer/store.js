/**
 * The peer's store: namespaces of byte keys and values with the Swift
 * kernel's semantics and merge rules (docs/PROTOCOL.md, "Merge rules",
 * "Catch-up", "Tombstone collection and snapshots"):
 *
 * - every write carries a hybrid logical clock timestamp (48 bits of Unix ms,
 *   16 of counter) and this replica's id; per key the greatest (timestamp,
 *   replica) wins; each record names the version it replaced, so a
 *   concurrent overwrite is reported to watchers as a conflict;
 * - deletes are tombstones, collected once every paired device acknowledged
 *   them; counters are a CRDT (per replica: added, removed; merge = pointwise
 *   maximum; a counter beats a plain value or tombstone);
 * - commits are numbered 1, 2, 3… per replica; a change log says which keys
 *   each wrote; the version vector says, per origin, how far everything is applied.
 *
 * Storage layout (backend.js): records [ns, hex key] -> {tomb, counter, ts,
 * replica, seq, pts, prep, value}; log [origin hex, seq] -> {ts, keys};
 * meta "replica", "clock" {seq, ts}, "observed", "vector" {origin hex: {seq, ts}},
 * "collected" {origin hex: seq}, "ack:<device>" {vector, at}.
 * @module masq/peer/store
 */
import { hex, unhex, utf8, fromUtf8, randomReplica } from "./util.js";
import { encodeCounter, decodeCounter, counterTotal } from "./frames.js";
import { MasqError } from "./errors.js";

export const LIMITS = { maxKeyBytes: 1024, maxValueBytes: 1 << 20, maxNamespaceBytes: 128, maxBatchEntries: 100000 };
export const CLOCK_BOUND = 5n * 60n * 1000n;
const MASK48 = (1n << 48n) - 1n;
const U63 = (1n << 63n) - 1n;

/** Replica ids as the 16 hex digits the log and vectors are keyed by. */
export const rhex = (r) => r.toString(16).padStart(16, "0");
const unrhex = (s) => BigInt("0x" + s);

function vectorFromStored(o) {
  const v = new Map();
  for (const [k, e] of Object.entries(o || {})) {
    const seq = typeof e === "object" ? e.seq : e;
    if (BigInt(seq) > 0n) v.set(unrhex(k), BigInt(seq));
  }
  return v;
}

function storedFromVector(v) {
  const o = {};
  for (const [r, s] of v) if (s > 0n) o[rhex(r)] = Number(s);
  return o;
}

/** Pointwise maximum into `a`. */
export function mergeVector(a, b) {
  for (const [r, s] of b) if (s > (a.get(r) || 0n)) a.set(r, s);
  return a;
}

/** Pointwise minimum over replicas known to either (absent = 0). */
export function meetVector(a, b) {
  const out = new Map();
  for (const r of new Set([...a.keys(), ...b.keys()])) {
    const m = (a.get(r) || 0n) < (b.get(r) || 0n) ? a.get(r) || 0n : b.get(r) || 0n;
    if (m > 0n) out.set(r, m);
  }
  return out;
}

const versionLess = (t1, r1, t2, r2) => t1 < t2 || (t1 === t2 && r1 < r2);
const versionEq = (t1, r1, t2, r2) => t1 === t2 && r1 === r2;

/** A record's value as `get` shows it: a counter's total in decimal. */
function shown(rec) {
  if (rec.tomb) return null;
  if (rec.counter) {
    try {
      return utf8.encode(String(counterTotal(decodeCounter(rec.value))));
    } catch (_) {
      return new Uint8Array(0);
    }
  }
  return rec.value;
}

/** The hybrid logical clock: strictly increasing, close to wall time, past every timestamp observed. */
export class HLC {
  constructor(last = 0n) {
    this.last = last;
  }
  tick(nowMs) {
    const physical = (BigInt(nowMs) & MASK48) << 16n;
    this.last = physical > this.last + 1n ? physical : this.last + 1n;
    return this.last;
  }
  observe(t) {
    if (t > this.last) this.last = t;
  }
}

/**
 * @typedef {Object} Change
 * @property {"put"|"delete"|"conflict"} kind
 * @property {"local"|"remote"} origin
 * @property {string} ns @property {Uint8Array} key
 * @property {Uint8Array|null} value @property {Uint8Array|null} [lostValue]
 */

export class PeerStore {
  /**
   * @param {import("./backend.js").MemoryBackend|import("./backend.js").IndexedDBBackend} backend
   * @param {{now?: () => number, limits?: Object}} [options] - now: the wall clock (tests move it)
   */
  constructor(backend, options = {}) {
    this.backend = backend;
    this.now = options.now || (() => Date.now());
    this.limits = { ...LIMITS, ...(options.limits || {}) };
    this.clock = new HLC();
    /** @type {Set<(changes: Change[]) => void>} */
    this.listeners = new Set();
    this.replica = 0n;
    this.identityEpoch = 0;
  }

  /** Read or create this replica's id. */
  async open() {
    await this.backend.tx("readwrite", async (t) => {
      let replica = await t.get("meta", "replica");
      if (replica === undefined) {
        replica = randomReplica();
        t.put("meta", "replica", replica);
        t.put("meta", "clock", { seq: 0, ts: 0n });
      }
      this.replica = replica;
      const clock = (await t.get("meta", "clock")) || { seq: 0, ts: 0n };
      this.clock.observe(clock.ts);
      this.clock.observe((await t.get("meta", "observed")) || 0n);
    });
    return this;
  }

  _publish(changes) {
    if (!changes.length) return;
    for (const l of this.listeners) {
      try {
        l(changes);
      } catch (e) {
        setTimeout(() => { throw e; });
      }
    }
  }

  // ---- reads ---------------------------------------------------------------

  /** @param {string} ns @param {Uint8Array} key @returns {Promise<Uint8Array|undefined>} */
  async get(ns, key) {
    const rec = await this.backend.tx("readonly", (t) => t.get("records", [ns, hex(key)]));
    if (!rec || rec.tomb) return undefined;
    return shown(rec);
  }

  /**
   * Entries under `prefix`, in key order (tombstones are not entries).
   * @param {string} ns @param {Uint8Array} prefix @param {{limit?: number, after?: Uint8Array}} [o]
   * @returns {Promise<Array<{key: Uint8Array, value: Uint8Array}>>}
   */
  async list(ns, prefix = new Uint8Array(0), o = {}) {
    const p = hex(prefix);
    const lower = [ns, o.after ? hex(o.after) + "\u0000" : p];
    const upper = [ns, p + "\uffff"];
    const rows = await this.backend.tx("readonly", (t) => t.range("records", lower, upper));
    const out = [];
    for (const [[, k], rec] of rows) {
      if (rec.tomb) continue;
      out.push({ key: unhex(k), value: shown(rec) });
      if (o.limit && out.length >= o.limit) break;
    }
    return out;
  }

  /** @returns {Promise<bigint>} a counter's total (0 when absent or deleted) */
  async counterGet(ns, key) {
    const rec = await this.backend.tx("readonly", (t) => t.get("records", [ns, hex(key)]));
    if (!rec || rec.tomb) return 0n;
    if (!rec.counter) throw new MasqError("invalid", "key holds a value, not a counter");
    return counterTotal(decodeCounter(rec.value));
  }

  // ---- local writes ----------------------------------------------------------

  _checkKey(key) {
    if (!key.length) throw new MasqError("invalid", "key must not be empty");
    if (key.length > this.limits.maxKeyBytes) throw new MasqError("too_large", `key is ${key.length} bytes; the limit is ${this.limits.maxKeyBytes}`);
  }
  _checkValue(v) {
    if (v.length > this.limits.maxValueBytes) throw new MasqError("too_large", `value is ${v.length} bytes; the limit is ${this.limits.maxValueBytes}`);
  }
  _checkNamespace(ns) {
    const n = utf8.encode(ns).length;
    if (n < 1 || n > this.limits.maxNamespaceBytes) throw new MasqError("invalid", `a namespace is 1 to ${this.limits.maxNamespaceBytes} bytes`);
  }

  /**
   * One local commit: `body(stage)` stages writes; all land in one
   * transaction with the change-log entry and the clock, or none does.
   */
  async _commit(body) {
    const changes = [];
    await this.backend.tx("readwrite", async (t) => {
      const [clock, seen] = await Promise.all([t.get("meta", "clock"), t.get("meta", "observed")]);
      const saved = clock || { seq: 0, ts: 0n };
      this.clock.observe(saved.ts);
      this.clock.observe(seen || 0n);
      const seq = saved.seq + 1;
      const ts = this.clock.tick(this.now());
      const keys = [];
      const logged = new Set();
      const c = { t, seq, ts, keys, logged, changes, replica: this.replica };
      await body(c);
      if (!keys.length) return;
      t.put("log", [rhex(this.replica), seq], { ts, keys });
      t.put("meta", "clock", { seq, ts });
    });
    this._publish(changes);
  }

  async _stage(c, ns, key, value) {
    const k = hex(key);
    const old = await c.t.get("records", [ns, k]);
    if (old && old.counter) {
      if (value !== null) throw new MasqError("invalid", "key holds a counter: change it with counterAdd");
      const total = counterTotal(decodeCounter(old.value));
      if (total !== 0n) await this._stageCounter(c, ns, key, -total);
      return;
    }
    if (value === null && (!old || old.tomb)) return;
    let pts = old ? old.ts : 0n, prep = old ? old.replica : 0n;
    let rewrite = false;
    if (old && versionEq(old.ts, old.replica, c.ts, c.replica)) {
      pts = old.pts;
      prep = old.prep;
      rewrite = true;
    }
    c.t.put("records", [ns, k], { tomb: value === null, counter: false, ts: c.ts, replica: c.replica, seq: BigInt(c.seq), pts, prep, value: value || new Uint8Array(0) });
    if (!rewrite && !c.logged.has(ns + "\u0000" + k)) {
      c.keys.push([ns, k]);
      c.logged.add(ns + "\u0000" + k);
    }
    c.changes.push({ kind: value === null ? "delete" : "put", origin: "local", ns, key, value });
  }

  async _stageCounter(c, ns, key, delta) {
    const k = hex(key);
    const old = await c.t.get("records", [ns, k]);
    let counter = new Map();
    let pts = 0n, prep = 0n;
    if (old) {
      pts = old.ts;
      prep = old.replica;
      if (!old.tomb) {
        if (!old.counter) throw new MasqError("invalid", "key holds a value, not a counter");
        counter = decodeCounter(old.value);
      }
    }
    const e = counter.get(c.replica) || { added: 0n, removed: 0n };
    const next = delta >= 0n ? { added: e.added + delta, removed: e.removed } : { added: e.added, removed: e.removed - delta };
    if (next.added > U63 || next.removed > U63) throw new MasqError("invalid", "the counter's share of this device would overflow");
    counter.set(c.replica, next);
    if (versionEq(pts, prep, c.ts, c.replica)) {
      pts = 0n;
      prep = 0n;
    }
    const rec = { tomb: false, counter: true, ts: c.ts, replica: c.replica, seq: BigInt(c.seq), pts, prep, value: encodeCounter(counter) };
    c.t.put("records", [ns, k], rec);
    c.keys.push([ns, k]);
    c.changes.push({ kind: "put", origin: "local", ns, key, value: shown(rec) });
  }

  async put(ns, key, value) {
    this._checkNamespace(ns);
    this._checkKey(key);
    this._checkValue(value);
    await this._commit((c) => this._stage(c, ns, key, value));
  }

  async del(ns, key) {
    this._checkNamespace(ns);
    this._checkKey(key);
    await this._commit((c) => this._stage(c, ns, key, null));
  }

  /**
   * Put (value non-null) or delete (null) every entry in one commit; with
   * `replace`, every other key of the namespace is deleted too.
   * @param {string} ns @param {Array<[Uint8Array, Uint8Array|null]>} entries @param {boolean} [replace]
   */
  async setAll(ns, entries, replace = false) {
    this._checkNamespace(ns);
    if (entries.length > this.limits.maxBatchEntries) throw new MasqError("too_large", `${entries.length} entries; the limit is ${this.limits.maxBatchEntries}`);
    entries.forEach(([k, v], i) => {
      try {
        this._checkKey(k);
        if (v !== null) this._checkValue(v);
      } catch (e) {
        throw new MasqError(e.code, `entry ${i}: ${e.message}`);
      }
    });
    await this._commit(async (c) => {
      if (replace) {
        const keep = new Set(entries.map(([k]) => hex(k)));
        const rows = await c.t.range("records", [ns, ""], [ns, "\uffff"]);
        for (const [[, k], rec] of rows) if (!rec.tomb && !keep.has(k)) await this._stage(c, ns, unhex(k), null);
      }
      for (const [k, v] of entries) await this._stage(c, ns, k, v);
    });
  }

  async clear(ns) {
    await this.setAll(ns, [], true);
  }

  /** @param {string} ns @param {Uint8Array} key @param {bigint} delta */
  async counterAdd(ns, key, delta) {
    this._checkNamespace(ns);
    this._checkKey(key);
    await this._commit((c) => this._stageCounter(c, ns, key, BigInt(delta)));
  }

  // ---- sync: vectors ---------------------------------------------------------

  /** @returns {Promise<{applied: Map<bigint,bigint>, collected: Map<bigint,bigint>, tips: Map<bigint,bigint>}>} */
  async vectors() {
    return this.backend.tx("readonly", async (t) => {
      const stored = (await t.get("meta", "vector")) || {};
      const applied = vectorFromStored(stored);
      const clock = (await t.get("meta", "clock")) || { seq: 0, ts: 0n };
      if (clock.seq > 0) applied.set(this.replica, BigInt(clock.seq));
      const collected = vectorFromStored(await t.get("meta", "collected"));
      const tips = new Map();
      for (const [origin, seq] of applied) {
        if (origin === this.replica) {
          tips.set(origin, clock.ts);
          continue;
        }
        const e = stored[rhex(origin)];
        if (e && BigInt(e.seq) === seq && e.ts) tips.set(origin, e.ts);
        else {
          const log = await t.get("log", [rhex(origin), Number(seq)]);
          if (log) tips.set(origin, log.ts);
        }
      }
      return { applied, collected, tips };
    });
  }

  /** Remember what a device acknowledged (tombstone collection). */
  async recordAck(device, vv) {
    await this.backend.tx("readwrite", async (t) => {
      const old = await t.get("meta", "ack:" + device);
      const merged = mergeVector(vectorFromStored(old && old.vector), vv);
      t.put("meta", "ack:" + device, { vector: storedFromVector(merged), at: this.now() });
    });
  }

  async acks(devices) {
    return this.backend.tx("readonly", async (t) => {
      const out = [];
      for (const d of devices) {
        const a = await t.get("meta", "ack:" + d);
        out.push(vectorFromStored(a && a.vector));
      }
      return out;
    });
  }

  /**
   * Whether a peer's HELLO shows this replica was rolled back (it holds more
   * of this replica's commits than exist here, or another commit under the
   * number it last applied).
   */
  async peerShowsRollback(theirs, tips) {
    const peerSeq = theirs.get(this.replica) || 0n;
    if (peerSeq === 0n) return false;
    return this.backend.tx("readonly", async (t) => {
      const clock = (await t.get("meta", "clock")) || { seq: 0, ts: 0n };
      if (peerSeq > BigInt(clock.seq)) return true;
      const theirTip = tips.get(this.replica);
      if (theirTip === undefined) return false;
      const log = await t.get("log", [rhex(this.replica), Number(peerSeq)]);
      const mine = BigInt(clock.seq) === peerSeq ? clock.ts : log ? log.ts : undefined;
      return mine !== undefined && mine !== theirTip;
    });
  }

  /**
   * Continue under a new replica id after a rollback (docs/PROTOCOL.md,
   * "Rollback and clock repair"): every record this replica wrote after
   * `agreed` (the highest of its commits any device acknowledged) is written
   * again in commits of the new id, keeping its timestamp and naming the old
   * version as the one it replaces.
   */
  async reidentify(agreed) {
    const old = this.replica;
    const fresh = randomReplica();
    await this.backend.tx("readwrite", async (t) => {
      const rows = await t.range("records", undefined, undefined);
      const mine = rows.filter(([, r]) => r.replica === old && r.seq > agreed);
      const stored = (await t.get("meta", "vector")) || {};
      const clock = (await t.get("meta", "clock")) || { seq: 0, ts: 0n };
      if (agreed > 0n) stored[rhex(old)] = { seq: Number(agreed), ts: 0n };
      for (const [[origin, seq]] of await t.range("log", [rhex(old), Number(agreed) + 1], [rhex(old), Infinity])) t.del("log", [origin, seq]);
      let seq = 0;
      for (let i = 0; i < mine.length; i += 256) {
        seq++;
        let ts = 0n;
        const keys = [];
        for (const [key, r] of mine.slice(i, i + 256)) {
          t.put("records", key, { ...r, replica: fresh, seq: BigInt(seq), pts: r.ts, prep: old });
          keys.push(key);
          if (r.ts > ts) ts = r.ts;
        }
        t.put("log", [rhex(fresh), seq], { ts: ts || clock.ts, keys });
      }
      t.put("meta", "vector", stored);
      t.put("meta", "replica", fresh);
      t.put("meta", "clock", { seq, ts: clock.ts });
    });
    this.replica = fresh;
    this.identityEpoch++;
  }

  // ---- sync: export ----------------------------------------------------------

  /**
   * Commits a replica with vector `peer` lacks, oldest first per origin, up
   * to the limits; null when `peer` is behind the collection horizon (it
   * needs a snapshot first). Origins in `holdBack` are skipped.
   */
  async exportCommits(peer, maxCommits = 1000, maxBytes = 1 << 20, holdBack = new Set()) {
    return this.backend.tx("readonly", async (t) => {
      const applied = vectorFromStored(await t.get("meta", "vector"));
      const clock = (await t.get("meta", "clock")) || { seq: 0, ts: 0n };
      if (clock.seq > 0) applied.set(this.replica, BigInt(clock.seq));
      const collected = vectorFromStored(await t.get("meta", "collected"));
      for (const [r, s] of collected) if ((peer.get(r) || 0n) < s) return null;
      const out = [];
      let bytes = 0;
      const origins = [...applied.keys()].sort((a, b) => (a < b ? -1 : 1));
      for (const origin of origins) {
        const have = peer.get(origin) || 0n, mine = applied.get(origin);
        if (have >= mine || holdBack.has(origin)) continue;
        // Read ahead in ranges: far fewer round trips than one get per commit.
        let seq = Number(have) + 1;
        while (seq <= Number(mine)) {
          if (out.length >= maxCommits || bytes >= maxBytes) return out;
          const logs = await t.range("log", [rhex(origin), seq], [rhex(origin), Math.min(Number(mine), seq + 255) + 1]);
          if (!logs.length || logs[0][0][1] !== seq) throw new MasqError("corrupt", `change log lacks commit ${seq} of replica ${rhex(origin)}`);
          for (const [[, s], entry] of logs) {
            if (s !== seq) throw new MasqError("corrupt", `change log lacks commit ${seq} of replica ${rhex(origin)}`);
            if (out.length >= maxCommits) return out;
            const records = [];
            let size = 32;
            for (const [ns, k] of entry.keys) {
              const rec = await t.get("records", [ns, k]);
              if (!rec || !(rec.counter || (rec.replica === origin && rec.seq === BigInt(seq)))) continue;
              records.push({ ns, key: unhex(k), tombstone: rec.tomb, counter: rec.counter, ts: rec.ts, replica: rec.replica, seq: rec.seq, prevTs: rec.pts, prevReplica: rec.prep, value: rec.value });
              size += k.length / 2 + rec.value.length + ns.length + 48;
            }
            if (out.length && bytes + size > maxBytes) return out;
            bytes += size;
            out.push({ origin, seq: BigInt(seq), ts: entry.ts, records });
            seq++;
          }
        }
      }
      return out;
    });
  }

  /** One chunk of every record (tombstones included) after `cursor`, with the next cursor (null when done). */
  async snapshotChunk(cursor, maxBytes = 1 << 20) {
    return this.backend.tx("readonly", async (t) => {
      const lower = cursor ? [cursor[0], cursor[1] + "\u0000"] : undefined;
      const rows = await t.range("records", lower, undefined, 4096);
      const records = [];
      let bytes = 0, last = null;
      for (const [[ns, k], rec] of rows) {
        const size = k.length / 2 + rec.value.length + 48;
        if (records.length && bytes + size > maxBytes) return { records, next: last };
        records.push({ ns, key: unhex(k), tombstone: rec.tomb, counter: rec.counter, ts: rec.ts, replica: rec.replica, seq: rec.seq, prevTs: rec.pts, prevReplica: rec.prep, value: rec.value });
        bytes += size;
        last = [ns, k];
      }
      return { records, next: rows.length === 4096 ? last : null };
    });
  }

  // ---- sync: apply -----------------------------------------------------------

  /** How far (ms) the latest timestamp lies beyond now + bound, or null. */
  futureSkew(timestamps, bound = CLOCK_BOUND) {
    let latest = 0n;
    for (const t of timestamps) if (t >> 16n > latest) latest = t >> 16n;
    const now = BigInt(this.now());
    return latest > now && latest - now > bound ? latest - now : null;
  }

  _observe(t, stamp, observed) {
    const ceiling = ((BigInt(this.now()) + CLOCK_BOUND) << 16n) | 0xffffn;
    const seen = stamp < ceiling ? stamp : ceiling;
    this.clock.observe(seen);
    if (seen > observed.value) {
      observed.value = seen;
      t.put("meta", "observed", seen);
    }
  }

  /** Why a remote commit cannot be applied here (a refusal reason 1–4), or 0. */
  checkCommit(c, bound = CLOCK_BOUND) {
    if (this.futureSkew([c.ts, ...c.records.map((r) => r.ts)], bound) !== null) return 1;
    if (c.origin === 0n || c.seq === 0n) return 4;
    for (const r of c.records) {
      if (!r.counter && (r.replica !== c.origin || r.seq !== c.seq)) return 4;
      const n = utf8.encode(r.ns).length;
      if (!r.key.length || r.key.length > this.limits.maxKeyBytes || r.value.length > this.limits.maxValueBytes + 1024 || n > 255) return 2;
      if (r.counter) {
        try { decodeCounter(r.value); } catch (_) { return 4; }
      }
    }
    return 0;
  }

  /**
   * Apply remote commits (already checked with checkCommit) in one
   * transaction; per commit "applied", "duplicate" or "gap" (an earlier
   * commit of its origin is missing).
   * @returns {Promise<string[]>}
   */
  async applyCommits(commits) {
    const changes = [];
    const results = await this.backend.tx("readwrite", async (t) => {
      const [vector, saved, seen] = await Promise.all([t.get("meta", "vector"), t.get("meta", "clock"), t.get("meta", "observed")]);
      const stored = vector || {};
      const clock = saved || { seq: 0, ts: 0n };
      const observed = { value: seen || 0n };
      // Which commits apply follows from the vector alone: decided before any record is read.
      const out = [], todo = [];
      const next = new Map();
      for (const c of commits) {
        const o = rhex(c.origin);
        const applied = c.origin === this.replica ? BigInt(clock.seq) : next.has(o) ? next.get(o) : stored[o] ? BigInt(stored[o].seq) : 0n;
        if (c.seq <= applied) { out.push("duplicate"); continue; }
        if (c.seq > applied + 1n) { out.push("gap"); continue; }
        if (c.origin === this.replica) throw new MasqError("corrupt", `a peer holds commit ${c.seq} of this replica, which it never made`);
        next.set(o, c.seq);
        out.push("applied");
        todo.push(c);
      }
      // Every record's local state read at once for the whole batch (few IndexedDB
      // requests, none awaited alone); `local` then follows this transaction's own writes.
      const keysOf = todo.map((c) => c.records.map((r) => [r.ns, hex(r.key)]));
      const local = new Map();
      const wanted = [];
      for (const keys of keysOf) {
        for (const key of keys) {
          const id = key[0] + "\u0000" + key[1];
          if (!local.has(id)) { local.set(id, undefined); wanted.push(key); }
        }
      }
      const found = await t.getMany("records", wanted);
      for (let i = 0; i < wanted.length; i++) if (found[i] !== undefined) local.set(wanted[i][0] + "\u0000" + wanted[i][1], found[i]);
      for (let n = 0; n < todo.length; n++) {
        const c = todo[n], keys = keysOf[n];
        for (let i = 0; i < c.records.length; i++) {
          const id = keys[i][0] + "\u0000" + keys[i][1];
          const change = this._mergeRecord(t, c.records[i], keys[i][1], local.get(id), (rec) => local.set(id, rec));
          if (change) changes.push(change);
        }
        const o = rhex(c.origin);
        t.put("log", [o, Number(c.seq)], { ts: c.ts, keys });
        stored[o] = { seq: Number(c.seq), ts: c.ts };
        this._observe(t, c.ts, observed);
      }
      t.put("meta", "vector", stored);
      return out;
    });
    this._publish(changes);
    return results;
  }

  /** Merge one remote record (inside a transaction); returns the change to
   *  report. `read`: its local record when already read ({local}). */
  async _merge(t, remote, read = null) {
    const k = hex(remote.key);
    const local = read ? read.local : await t.get("records", [remote.ns, k]);
    return this._mergeRecord(t, remote, k, local);
  }

  /**
   * Merge one remote record into `local` (its key's record here, or
   * undefined), hex key `k`: writes the result in `t` (and tells `wrote`),
   * returns the change to report, or null when nothing changes.
   */
  _mergeRecord(t, remote, k, local, wrote = null) {
    let rec = { tomb: remote.tombstone, counter: remote.counter, ts: remote.ts, replica: remote.replica, seq: remote.seq, pts: remote.prevTs, prep: remote.prevReplica, value: remote.value };
    let conflict = null;
    if (remote.counter) {
      // This replica alone writes its own share: a remote value for it is dropped.
      const incoming = decodeCounter(remote.value);
      if (incoming.delete(this.replica)) rec.value = encodeCounter(incoming);
    }
    if (local) {
      if (local.counter && !remote.counter) return null;
      if (local.counter && remote.counter) {
        const merged = decodeCounter(local.value);
        for (const [r, e] of decodeCounter(rec.value)) {
          const m = merged.get(r) || { added: 0n, removed: 0n };
          merged.set(r, { added: m.added > e.added ? m.added : e.added, removed: m.removed > e.removed ? m.removed : e.removed });
        }
        const value = encodeCounter(merged);
        if (versionLess(rec.ts, rec.replica, local.ts, local.replica)) rec = { ...local };
        rec.value = value;
        if (equalBytes(value, local.value) && versionEq(rec.ts, rec.replica, local.ts, local.replica) && rec.seq === local.seq
          && rec.pts === local.pts && rec.prep === local.prep && rec.tomb === local.tomb) return null;
      } else if (remote.counter) {
        // A counter replaces a plain value or tombstone.
      } else if (versionEq(local.ts, local.replica, remote.ts, remote.replica)) {
        return null;
      } else if (versionLess(remote.ts, remote.replica, local.ts, local.replica)) {
        // The local write wins; if it did not know the remote one, report what was lost.
        if (!versionEq(remote.ts, remote.replica, local.pts, local.prep) && versionLess(local.pts, local.prep, remote.ts, remote.replica)
          && !(local.tomb && remote.tombstone)) {
          return { kind: "conflict", origin: "remote", ns: remote.ns, key: remote.key, value: shown(local), lostValue: remote.tombstone ? null : shownRemote(remote), lostWasDeleted: remote.tombstone };
        }
        return null;
      } else if (!versionEq(local.ts, local.replica, remote.prevTs, remote.prevReplica) && versionLess(remote.prevTs, remote.prevReplica, local.ts, local.replica)
        && !(local.tomb && remote.tombstone)) {
        conflict = { lost: local.tomb ? null : shown(local), deleted: local.tomb };
      }
    }
    t.put("records", [remote.ns, k], rec);
    if (wrote) wrote(rec);
    const change = { kind: rec.tomb ? "delete" : "put", origin: "remote", ns: remote.ns, key: remote.key, value: shown(rec) };
    if (conflict) {
      change.kind = "conflict";
      change.lostValue = conflict.lost;
      change.lostWasDeleted = conflict.deleted;
    }
    return change;
  }

  /** Merge a snapshot's records (the caller checked their clocks). */
  async applySnapshotRecords(records) {
    const changes = [];
    await this.backend.tx("readwrite", async (t) => {
      const keys = records.map((r) => [r.ns, hex(r.key)]);
      const [seen, found] = await Promise.all([t.get("meta", "observed"), t.getMany("records", keys)]);
      const observed = { value: seen || 0n };
      // Read at once; a key sent twice sees what the first wrote.
      const local = new Map();
      for (let i = 0; i < records.length; i++) {
        const id = keys[i][0] + "\u0000" + keys[i][1];
        const change = this._mergeRecord(t, records[i], keys[i][1], local.has(id) ? local.get(id) : found[i], (rec) => local.set(id, rec));
        if (change) changes.push(change);
        this._observe(t, records[i].ts, observed);
      }
    });
    this._publish(changes);
  }

  /**
   * Finish a snapshot taken at the sender's vector `vv` holding the keys
   * `received` (Set of "ns\u0000hexkey"): local records the sender's state
   * covers but did not send were deleted and collected there, so they go here too.
   */
  async finishSnapshot(vv, received) {
    const changes = [];
    await this.backend.tx("readwrite", async (t) => {
      const rows = await t.range("records", undefined, undefined);
      for (const [[ns, k], rec] of rows) {
        if ((vv.get(rec.replica) || 0n) < rec.seq) continue;
        if (received.has(ns + "\u0000" + k)) continue;
        t.del("records", [ns, k]);
        changes.push({ kind: "delete", origin: "remote", ns, key: unhex(k), value: null });
      }
      const stored = (await t.get("meta", "vector")) || {};
      const applied = vectorFromStored(stored);
      const clock = (await t.get("meta", "clock")) || { seq: 0, ts: 0n };
      if (clock.seq > 0) applied.set(this.replica, BigInt(clock.seq));
      for (const [origin, seq] of vv) {
        if (origin === this.replica || seq <= (applied.get(origin) || 0n)) continue;
        stored[rhex(origin)] = { seq: Number(seq), ts: 0n };
        applied.set(origin, seq);
      }
      t.put("meta", "vector", stored);
      const collected = mergeVector(vectorFromStored(await t.get("meta", "collected")), meetVector(vv, applied));
      t.put("meta", "collected", storedFromVector(collected));
    });
    this._publish(changes);
  }

  /**
   * Forget tombstones and change-log entries every device acknowledged
   * (`devices`: the last vector each acknowledged) — only once this replica
   * holds everything each of them had.
   */
  async collectGarbage(devices) {
    return this.backend.tx("readwrite", async (t) => {
      const applied = vectorFromStored(await t.get("meta", "vector"));
      const clock = (await t.get("meta", "clock")) || { seq: 0, ts: 0n };
      if (clock.seq > 0) applied.set(this.replica, BigInt(clock.seq));
      let horizon = new Map(applied);
      for (const d of devices) for (const [r, s] of d) if ((horizon.get(r) || 0n) < s) return 0;
      for (const d of devices) horizon = meetVector(horizon, d);
      const previous = vectorFromStored(await t.get("meta", "collected"));
      const collected = mergeVector(new Map(previous), horizon);
      if ([...collected].every(([r, s]) => previous.get(r) === s) && collected.size === previous.size) return 0;
      let n = 0;
      for (const [key, rec] of await t.range("records", undefined, undefined)) {
        if (rec.tomb && (horizon.get(rec.replica) || 0n) >= rec.seq) {
          t.del("records", key);
          n++;
        }
      }
      for (const [origin, seq] of horizon) {
        if (seq <= (previous.get(origin) || 0n)) continue;
        for (const [key] of await t.range("log", [rhex(origin), 0], [rhex(origin), Number(seq) + 1])) t.del("log", key);
      }
      t.put("meta", "collected", storedFromVector(collected));
      return n;
    });
  }

  /** Local state (not synced): devices, sessions, identity, counters. */
  async getMeta(key) {
    return this.backend.tx("readonly", (t) => t.get("meta", key));
  }
  async putMeta(key, value) {
    return this.backend.tx("readwrite", (t) => { t.put("meta", key, value); });
  }
  async deleteMeta(key) {
    return this.backend.tx("readwrite", (t) => { t.del("meta", key); });
  }
}

function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function shownRemote(r) {
  return shown({ tomb: r.tombstone, counter: r.counter, value: r.value });
}

export { fromUtf8 };

/**
 * Sync frames (docs/PROTOCOL.md section 3), exactly as the Swift kernel
 * encodes them: every length checked, unknown versions, types and flags
 * refused. Records and vectors use BigInt for 64-bit fields.
 *
 *   frame   = u8 version(1) · u8 type · body
 *   HELLO   (1) u64 replica · vector applied · vector collected · [tips · [u8 flags]]
 *   COMMITS (2) varint n · n × commit
 *   ACK     (3) vector applied
 *   SNAPSHOT(4) u8 final · names · varint n · n × record · [vector if final]
 *   REFUSED (5) u8 reason · u64 origin · varint seq · u64 timestamp · u64 receiver's Unix ms
 *   FRAGMENT(6) u32 message id · u32 index · u32 count · bytes
 *   REMOVALS(7) u16 n · n × (10 removed · 10 remover · u64 Unix ms)
 *   commit  = u64 origin · varint seq · u64 timestamp · names · varint n · n × record
 *   names   = varint n · n × (varint len · UTF-8 namespace)
 *   record  = varint name index · varint keyLen · key · u8 flags ·
 *             [u64 ts · u64 replica · varint seq   unless flags bit 4 (the commit's own version)] ·
 *             [u64 prev ts · u64 prev replica      if flags bit 1] · varint valueLen · value
 *   flags   = bit 0 tombstone · bit 1 has previous · bit 3 counter · bit 4 commit's version
 * @module masq/peer/frames
 */
import { Writer, Reader, FormatError, utf8, fromUtf8 } from "./bytes.js";

export const VERSION = 1;
export const MAX_FRAME = 64 << 20;
export const T = { HELLO: 1, COMMITS: 2, ACK: 3, SNAPSHOT: 4, REFUSED: 5, FRAGMENT: 6, REMOVALS: 7 };
const TOMBSTONE = 1, PREVIOUS = 2, COUNTER = 8, OWN = 16;

/**
 * A record as it travels: version (ts, replica), seq, previous version.
 * @typedef {Object} SyncRecord
 * @property {string} ns @property {Uint8Array} key
 * @property {boolean} tombstone @property {boolean} counter
 * @property {bigint} ts @property {bigint} replica @property {bigint} seq
 * @property {bigint} prevTs @property {bigint} prevReplica
 * @property {Uint8Array} value - a counter's encoded state for counters; empty for tombstones
 */

/** A version vector: Map<bigint replica, bigint seq>. */
export function encodeVector(w, v) {
  const entries = [...v.entries()].filter(([, s]) => s > 0n).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  w.varint(entries.length);
  for (const [r, s] of entries) w.u64(r).varint(s);
}

export function decodeVector(r, limit = 4096) {
  const n = r.varint();
  if (n > limit) throw new FormatError(`version vector with ${n} entries`);
  const v = new Map();
  for (let i = 0; i < n; i++) {
    const replica = r.u64(), seq = r.varintBig();
    if (replica === 0n) throw new FormatError("version vector names replica 0");
    if (seq > 0n) v.set(replica, seq);
    else v.delete(replica);
  }
  return v;
}

function encodeNames(w, records) {
  const index = new Map();
  for (const r of records) if (!index.has(r.ns)) index.set(r.ns, index.size);
  w.varint(index.size);
  for (const name of index.keys()) {
    const b = utf8.encode(name);
    w.varint(b.length).bytes(b);
  }
  return index;
}

function encodeRecord(w, r, names, commit) {
  w.varint(names.get(r.ns)).varint(r.key.length).bytes(r.key);
  const hasPrev = r.prevTs !== 0n || r.prevReplica !== 0n;
  const own = commit && commit.origin === r.replica && commit.ts === r.ts && commit.seq === r.seq;
  w.byte((r.tombstone ? TOMBSTONE : 0) | (hasPrev ? PREVIOUS : 0) | (r.counter ? COUNTER : 0) | (own ? OWN : 0));
  if (!own) w.u64(r.ts).u64(r.replica).varint(r.seq);
  if (hasPrev) w.u64(r.prevTs).u64(r.prevReplica);
  w.varint(r.value.length).bytes(r.value);
}

/**
 * @param {Object} f - {type: "hello"|"commits"|"ack"|"snapshot"|"refused", ...}
 * @returns {Uint8Array}
 */
export function encode(f) {
  const w = new Writer(1024).byte(VERSION);
  switch (f.type) {
    case "hello": {
      w.byte(T.HELLO).u64(f.replica);
      encodeVector(w, f.applied);
      encodeVector(w, f.collected);
      const tips = [...f.tips.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
      w.varint(tips.length);
      for (const [o, t] of tips) w.u64(o).u64(t);
      const flags = (f.wantsSnapshot ? 1 : 0) | (f.filter ? 2 : 0);
      if (flags) w.byte(flags);
      if (f.filter) encodeFilter(w, f.filter);
      break;
    }
    case "commits":
      w.byte(T.COMMITS).varint(f.commits.length);
      for (const c of f.commits) {
        w.u64(c.origin).varint(c.seq).u64(c.ts);
        const names = encodeNames(w, c.records);
        w.varint(c.records.length);
        for (const r of c.records) encodeRecord(w, r, names, c);
      }
      break;
    case "ack":
      w.byte(T.ACK);
      encodeVector(w, f.applied);
      break;
    case "snapshot": {
      w.byte(T.SNAPSHOT).byte(f.final ? 1 : 0);
      const names = encodeNames(w, f.records);
      w.varint(f.records.length);
      for (const r of f.records) encodeRecord(w, r, names, null);
      if (f.final) encodeVector(w, f.final);
      break;
    }
    case "refused":
      w.byte(T.REFUSED).byte(f.reason).u64(f.origin).varint(f.seq).u64(f.ts).u64(f.receiverTime);
      break;
    default:
      throw new FormatError(`cannot encode a ${f.type} frame`);
  }
  return w.done();
}

function count(r) {
  const n = r.varint();
  if (n > r.b.length) throw new FormatError(`count ${n} larger than the frame`);
  return n;
}

function names(r) {
  const n = count(r);
  const out = [];
  for (let i = 0; i < n; i++) {
    const len = count(r);
    if (len < 1 || len > 255) throw new FormatError("bad namespace length");
    try {
      out.push(fromUtf8.decode(r.bytes(len)));
    } catch (_) {
      throw new FormatError("namespace is not UTF-8");
    }
  }
  return out;
}

function record(r, table, commit) {
  const index = r.varint();
  if (index >= table.length) throw new FormatError(`record names namespace ${index} of ${table.length}`);
  const key = r.bytes(count(r)).slice();
  const flags = r.byte();
  if (flags & ~(TOMBSTONE | PREVIOUS | COUNTER | OWN)) throw new FormatError(`unknown record flags ${flags}`);
  let ts, replica, seq;
  if (flags & OWN) {
    if (!commit) throw new FormatError("a snapshot record cannot borrow a commit's version");
    ({ ts, origin: replica, seq } = commit);
  } else {
    ts = r.u64();
    replica = r.u64();
    seq = r.varintBig();
  }
  let prevTs = 0n, prevReplica = 0n;
  if (flags & PREVIOUS) {
    prevTs = r.u64();
    prevReplica = r.u64();
  }
  const value = r.bytes(count(r)).slice();
  const tombstone = (flags & TOMBSTONE) !== 0;
  if (tombstone && value.length) throw new FormatError("a tombstone with a value");
  return { ns: table[index], key, tombstone, counter: (flags & COUNTER) !== 0, ts, replica, seq, prevTs, prevReplica, value };
}

/**
 * A HELLO's namespace filter (selective sync): the sender keeps only these
 * namespaces — `include` (null: all) names or `prefix*` patterns, minus `exclude`.
 *   u8 has include · [varint n · patterns] · varint m · patterns; pattern = varint len (1–255) · UTF-8
 */
export function decodeFilter(r) {
  const list = () => {
    const n = r.varint();
    if (n > 256) throw new FormatError(`a namespace filter of ${n} patterns`);
    const out = [];
    for (let i = 0; i < n; i++) {
      const len = r.varint();
      if (len < 1 || len > 255) throw new FormatError(`a namespace pattern of ${len} bytes`);
      try {
        out.push(fromUtf8.decode(r.bytes(len)));
      } catch (_) {
        throw new FormatError("a namespace pattern is not UTF-8");
      }
    }
    return out;
  };
  const has = r.byte();
  if (has > 1) throw new FormatError("bad namespace filter");
  const include = has ? list() : null;
  return { include, exclude: list() };
}

function encodeFilter(w, f) {
  const list = (items) => {
    w.varint(items.length);
    for (const i of items) {
      const b = utf8.encode(i);
      w.varint(b.length).bytes(b);
    }
  };
  if (f.include) {
    w.byte(1);
    list(f.include);
  } else w.byte(0);
  list(f.exclude || []);
}

/** Whether a filter keeps namespace `ns`. */
export function filterKeeps(f, ns) {
  const m = (p) => (p.endsWith("*") ? ns.startsWith(p.slice(0, -1)) : p === ns);
  if (f.include && !f.include.some(m)) return false;
  return !(f.exclude || []).some(m);
}

/**
 * Decode a frame (FRAGMENT and REMOVALS are the sync service's, see service.js).
 * @param {Uint8Array} bytes
 */
export function decode(bytes) {
  if (bytes.length > MAX_FRAME) throw new FormatError(`sync frame of ${bytes.length} bytes exceeds ${MAX_FRAME}`);
  const r = new Reader(bytes);
  const version = r.byte();
  if (version !== VERSION) throw new FormatError(`sync frame version ${version} is not supported (this library speaks ${VERSION})`);
  const type = r.byte();
  let f;
  switch (type) {
    case T.HELLO: {
      const replica = r.u64();
      const applied = decodeVector(r), collected = decodeVector(r);
      const tips = new Map();
      let flags = 0, filter = null;
      if (!r.atEnd) {
        const n = r.varint();
        if (n > 4096) throw new FormatError(`a HELLO with ${n} tips`);
        for (let i = 0; i < n; i++) tips.set(r.u64(), r.u64());
        if (!r.atEnd) {
          flags = r.byte();
          if (flags & ~3) throw new FormatError(`unknown HELLO flags ${flags}`);
          if (flags & 2) filter = decodeFilter(r);
        }
      }
      f = { type: "hello", replica, applied, collected, tips, wantsSnapshot: (flags & 1) !== 0 };
      if (filter) f.filter = filter;
      break;
    }
    case T.COMMITS: {
      const n = count(r);
      const commits = [];
      for (let i = 0; i < n; i++) {
        const origin = r.u64(), seq = r.varintBig(), ts = r.u64();
        const table = names(r);
        const m = count(r);
        const records = [];
        const c = { origin, seq, ts };
        for (let j = 0; j < m; j++) records.push(record(r, table, c));
        commits.push({ origin, seq, ts, records });
      }
      f = { type: "commits", commits };
      break;
    }
    case T.ACK:
      f = { type: "ack", applied: decodeVector(r) };
      break;
    case T.SNAPSHOT: {
      const fin = r.byte();
      if (fin > 1) throw new FormatError("bad snapshot flag");
      const table = names(r);
      const n = count(r);
      const records = [];
      for (let i = 0; i < n; i++) records.push(record(r, table, null));
      f = { type: "snapshot", records, final: fin === 1 ? decodeVector(r) : null };
      break;
    }
    case T.REFUSED: {
      const reason = r.byte();
      if (reason < 1 || reason > 4) throw new FormatError("unknown refusal reason");
      f = { type: "refused", reason, origin: r.u64(), seq: r.varintBig(), ts: r.u64(), receiverTime: r.u64() };
      break;
    }
    default:
      throw new FormatError(`unknown sync frame type ${type}`);
  }
  if (!r.atEnd) throw new FormatError("sync frame has trailing bytes");
  return f;
}

/**
 * A counter's state: Map<bigint replica, {added: bigint, removed: bigint}>.
 * Encoded as varint n · n × (u64 replica · varint added · varint removed), replicas ascending.
 */
export function encodeCounter(c) {
  const w = new Writer(64);
  const entries = [...c.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  w.varint(entries.length);
  for (const [r, e] of entries) w.u64(r).varint(e.added).varint(e.removed);
  return w.done();
}

export function decodeCounter(bytes) {
  const r = new Reader(bytes);
  const n = r.varint();
  if (n > 65536) throw new FormatError(`counter with ${n} replicas`);
  const c = new Map();
  for (let i = 0; i < n; i++) c.set(r.u64(), { added: r.varintBig(), removed: r.varintBig() });
  if (!r.atEnd) throw new FormatError("counter has trailing bytes");
  return c;
}

/** A counter's total (wrapping 64-bit arithmetic, as the kernel's). */
export function counterTotal(c) {
  let sum = 0n;
  for (const e of c.values()) sum = BigInt.asIntN(64, sum + BigInt.asIntN(64, e.added) - BigInt.asIntN(64, e.removed));
  return sum;
}

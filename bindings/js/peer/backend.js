/**
 * Where the peer keeps its data: IndexedDB in a browser (one database per
 * origin and store name), or memory (tests, and pages that ask for no
 * persistence). Three object stores: `records` ([namespace, key as hex] ->
 * record), `log` ([origin as 16 hex digits, seq] -> commit's key list) and
 * `meta` (string -> anything structured-cloneable, CryptoKeys included).
 *
 * `tx(mode, fn)` runs `fn(t)` in one transaction: all of it or nothing; `t`
 * has get, getMany (values of many keys, in few requests), put, del and
 * range. `fn` may await only `t`'s own requests (an IndexedDB transaction ends when it
 * has nothing left to do), never WebCrypto or timers.
 * @module masq/peer/backend
 */
import { MasqError } from "./errors.js";

export const STORES = ["records", "log", "meta"];

/** IndexedDB's key order, for the memory backend. */
function cmp(a, b) {
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      const c = cmp(a[i], b[i]);
      if (c) return c;
    }
    return a.length - b.length;
  }
  if (typeof a === typeof b) return a < b ? -1 : a > b ? 1 : 0;
  const rank = (x) => (typeof x === "number" ? 0 : typeof x === "string" ? 2 : 3);
  return rank(a) - rank(b);
}

/** In memory, with the same transaction semantics (writes staged, applied on success). */
export class MemoryBackend {
  constructor() {
    /** @type {Object<string, Map<string, {key: any, value: any}>>} */
    this.data = { records: new Map(), log: new Map(), meta: new Map() };
    this._chain = Promise.resolve();
    /** Bytes allowed in all (null: no limit) — to play a full quota in tests. */
    this.quota = null;
    this.size = 0;
  }

  tx(mode, fn) {
    const run = async () => {
      const staged = new Map();
      const id = (store, key) => store + "\u0000" + JSON.stringify(key);
      const t = {
        get: async (store, key) => {
          const s = staged.get(id(store, key));
          if (s) return s.deleted ? undefined : s.value;
          const e = this.data[store].get(JSON.stringify(key));
          return e ? e.value : undefined;
        },
        getMany: (store, keys) => Promise.all(keys.map((key) => t.get(store, key))),
        put: (store, key, value) => {
          if (mode !== "readwrite") throw new Error("read-only transaction");
          staged.set(id(store, key), { store, key, value });
        },
        del: (store, key) => {
          if (mode !== "readwrite") throw new Error("read-only transaction");
          staged.set(id(store, key), { store, key, deleted: true });
        },
        range: async (store, lower, upper, limit = Infinity) => {
          const rows = new Map();
          for (const e of this.data[store].values()) rows.set(JSON.stringify(e.key), e);
          for (const s of staged.values()) {
            if (s.store !== store) continue;
            if (s.deleted) rows.delete(JSON.stringify(s.key));
            else rows.set(JSON.stringify(s.key), { key: s.key, value: s.value });
          }
          const out = [...rows.values()]
            .filter((e) => (lower === undefined || cmp(e.key, lower) >= 0) && (upper === undefined || cmp(e.key, upper) < 0))
            .sort((x, y) => cmp(x.key, y.key));
          return out.slice(0, limit).map((e) => [e.key, e.value]);
        },
      };
      const result = await fn(t);
      if (this.quota !== null) {
        let grow = 0;
        for (const s of staged.values()) if (!s.deleted) grow += approxSize(s.value);
        if (this.size + grow > this.quota) throw new MasqError("quota", "the storage for this site is full: nothing of this change was written");
        this.size += grow;
      }
      for (const s of staged.values()) {
        if (s.deleted) this.data[s.store].delete(JSON.stringify(s.key));
        else this.data[s.store].set(JSON.stringify(s.key), { key: s.key, value: s.value });
      }
      return result;
    };
    const p = this._chain.then(run, run);
    this._chain = p.catch(() => {});
    return p;
  }

  close() {}
}

function approxSize(v) {
  if (v instanceof Uint8Array) return v.length;
  if (v && typeof v === "object") {
    let n = 16;
    for (const x of Object.values(v)) n += approxSize(x);
    return n;
  }
  return 8;
}

function promised(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** The browser's IndexedDB. */
/** How long a storage estimate far from the limit is reused (ms), and the
 *  headroom below which every write asks the browser afresh (bytes). */
const ROOM_REUSE_MS = 2000;
const ROOM_MARGIN = 64 << 20;

export class IndexedDBBackend {
  /** @param {string} name - the database (per origin) */
  static async open(name) {
    if (!globalThis.indexedDB) throw new MasqError("unavailable", "this browser has no IndexedDB (private mode of some browsers): Masq cannot keep data here");
    const request = indexedDB.open(name, 1);
    request.onupgradeneeded = () => {
      for (const s of STORES) if (!request.result.objectStoreNames.contains(s)) request.result.createObjectStore(s);
    };
    let db;
    try {
      db = await promised(request);
    } catch (e) {
      throw new MasqError("unavailable", `cannot open IndexedDB "${name}": ${e && e.message}`);
    }
    const b = new IndexedDBBackend();
    b.db = db;
    b.name = name;
    return b;
  }

  /** The origin's quota and usage (navigator.storage.estimate), read before
   *  a write transaction: IndexedDB transactions cannot wait on other
   *  promises, and some browsers report a full quota only after the fact.
   *  A reading younger than ROOM_REUSE_MS that is far from the limit (more
   *  than a quarter of the quota and ROOM_MARGIN left) is reused, with the
   *  bytes this page wrote since added to its usage, so a write does not
   *  wait ~0.3–1 ms for the browser each time; near the limit every write
   *  asks afresh. */
  async estimate() {
    const c = this.room;
    if (c && c.maxBytes === this.maxBytes && Date.now() - c.at < ROOM_REUSE_MS
        && (c.e === null || c.e.quota - c.e.usage > Math.max(ROOM_MARGIN, c.e.quota / 4))) return c.e;
    let e = null;
    try {
      e = globalThis.navigator && navigator.storage && navigator.storage.estimate ? await navigator.storage.estimate() : null;
    } catch (_) { /* unknown: the browser alone decides */ }
    e = e && typeof e.quota === "number" && typeof e.usage === "number" ? { usage: e.usage, quota: e.quota } : null;
    // The app's own limit (PeerApp.setStorageLimit), if lower.
    if (this.maxBytes) e = { usage: e ? e.usage : 0, quota: Math.min(e ? e.quota : Infinity, this.maxBytes) };
    this.room = { at: Date.now(), maxBytes: this.maxBytes, e };
    return e;
  }

  async tx(mode, fn) {
    const room = mode === "readwrite" ? await this.estimate() : null;
    return new Promise((resolve, reject) => {
      let tx;
      let grow = 0;
      try {
        tx = this.db.transaction(STORES, mode);
      } catch (e) {
        reject(new MasqError("closed", `the store is closed (${e.message})`));
        return;
      }
      let result, failed = null;
      const handles = {};
      const os = (store) => handles[store] || (handles[store] = tx.objectStore(store));
      const t = {
        get: (store, key) => promised(os(store).get(key)),
        getMany: (store, keys) => getMany(os(store), keys),
        put: (store, key, value) => {
          grow += approxSize(value) + approxSize(key);
          os(store).put(value, key);
        },
        del: (store, key) => { os(store).delete(key); },
        range: async (store, lower, upper, limit) => {
          const range = lower !== undefined && upper !== undefined ? IDBKeyRange.bound(lower, upper, false, true)
            : lower !== undefined ? IDBKeyRange.lowerBound(lower) : upper !== undefined ? IDBKeyRange.upperBound(upper, true) : undefined;
          const o = os(store);
          const [keys, values] = await Promise.all([promised(o.getAllKeys(range, limit)), promised(o.getAll(range, limit))]);
          return keys.map((k, i) => [k, values[i]]);
        },
      };
      tx.oncomplete = () => {
        if (failed) return reject(failed);
        if (room) room.usage += grow;   // the reading this write was checked against (reused while far from the limit)
        resolve(result);
      };
      tx.onabort = () => reject(failed || mapError(tx.error));
      Promise.resolve().then(() => fn(t)).then((r) => {
        // Over the origin's quota: refuse the whole change (the browser may not have yet).
        if (room && room.usage + grow > room.quota) throw mapError({ name: "QuotaExceededError", message: "quota" });
        result = r;
      }).catch((e) => {
        failed = e;
        try { tx.abort(); } catch (_) { /* already finished */ }
      });
    });
  }

  close() {
    this.db.close();
  }
}

/** A string naming an IndexedDB key (a [string, string] pair fast, anything else as JSON): equal keys, equal names. */
function keyName(k) {
  return Array.isArray(k) && k.length === 2 && typeof k[0] === "string" && typeof k[1] === "string"
    ? k[0].length + ":" + k[0] + k[1] : JSON.stringify(k);
}

/**
 * The values of `keys` (undefined where absent), in their order, in few
 * requests: IndexedDB's requests are cheap to issue but each costs the
 * browser a round trip to its storage process, and a sync frame brings
 * thousands of keys — mostly new ones (an initial sync) or neighbours. So,
 * for [string, string] keys (records), the keys present between the least
 * and the greatest asked are listed first (getAllKeys, bounded): absent
 * keys need no read at all, and when most keys present there are asked
 * for, their values come in one getAll. Otherwise (a sparse range, other
 * key shapes) one get per key, all issued at once. The caller does not
 * write in the transaction while it waits for this.
 * @param {IDBObjectStore} o @param {Array} keys @returns {Promise<Array>}
 */
async function getMany(o, keys) {
  const each = (ks) => Promise.all(ks.map((k) => promised(o.get(k))));
  if (keys.length < 16) return each(keys);
  let lo = keys[0], hi = keys[0];
  for (const k of keys) {
    // The order of IndexedDB for a pair of strings: the first, then the second, each by UTF-16 code units (as JS's <).
    if (!Array.isArray(k) || k.length !== 2 || typeof k[0] !== "string" || typeof k[1] !== "string") return each(keys);
    if (k[0] < lo[0] || (k[0] === lo[0] && k[1] < lo[1])) lo = k;
    if (k[0] > hi[0] || (k[0] === hi[0] && k[1] > hi[1])) hi = k;
  }
  const range = IDBKeyRange.bound(lo, hi);
  const limit = 2 * keys.length + 64;
  const present = await promised(o.getAllKeys(range, limit));
  if (present.length >= limit) return each(keys);
  const at = new Map();
  for (let i = 0; i < present.length; i++) at.set(keyName(present[i]), i);
  const where = keys.map((k) => at.get(keyName(k)));
  const hits = where.filter((i) => i !== undefined);
  if (!hits.length) return keys.map(() => undefined);
  if (present.length <= 2 * hits.length + 64) {
    // Dense: the range's rows in one request; its keys listed again beside it, so both lists are of the same rows.
    const [ks, values] = await Promise.all([promised(o.getAllKeys(range, limit)), promised(o.getAll(range, limit))]);
    if (ks.length < limit && values.length === ks.length) {
      const row = new Map();
      for (let i = 0; i < ks.length; i++) row.set(keyName(ks[i]), i);
      return keys.map((k) => {
        const i = row.get(keyName(k));
        return i === undefined ? undefined : values[i];
      });
    }
  }
  const got = await each(hits.map((i) => present[i]));
  const value = new Map(hits.map((i, n) => [i, got[n]]));
  return where.map((i) => (i === undefined ? undefined : value.get(i)));
}

function mapError(e) {
  if (e && (e.name === "QuotaExceededError" || /quota/i.test(e.message || ""))) {
    return new MasqError("quota", "the browser's storage for this site is full (IndexedDB quota): nothing of this change was written; free space or delete data");
  }
  return new MasqError("io", `IndexedDB failed: ${e ? e.name + ": " + e.message : "aborted"}`);
}

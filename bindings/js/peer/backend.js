/**
 * Where the peer keeps its data: IndexedDB in a browser (one database per
 * origin and store name), or memory (tests, and pages that ask for no
 * persistence). Three object stores: `records` ([namespace, key as hex] ->
 * record), `log` ([origin as 16 hex digits, seq] -> commit's key list) and
 * `meta` (string -> anything structured-cloneable, CryptoKeys included).
 *
 * `tx(mode, fn)` runs `fn(t)` in one transaction: all of it or nothing. `fn`
 * may await only `t`'s own requests (an IndexedDB transaction ends when it
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
   *  promises, and some browsers report a full quota only after the fact. */
  async estimate() {
    let e = null;
    try {
      e = globalThis.navigator && navigator.storage && navigator.storage.estimate ? await navigator.storage.estimate() : null;
    } catch (_) { /* unknown: the browser alone decides */ }
    e = e && typeof e.quota === "number" && typeof e.usage === "number" ? { usage: e.usage, quota: e.quota } : null;
    // The app's own limit (PeerApp.setStorageLimit), if lower.
    if (this.maxBytes) e = { usage: e ? e.usage : 0, quota: Math.min(e ? e.quota : Infinity, this.maxBytes) };
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
      const t = {
        get: (store, key) => promised(tx.objectStore(store).get(key)),
        put: (store, key, value) => {
          grow += approxSize(value) + approxSize(key);
          tx.objectStore(store).put(value, key);
        },
        del: (store, key) => { tx.objectStore(store).delete(key); },
        range: async (store, lower, upper, limit) => {
          const range = lower !== undefined && upper !== undefined ? IDBKeyRange.bound(lower, upper, false, true)
            : lower !== undefined ? IDBKeyRange.lowerBound(lower) : upper !== undefined ? IDBKeyRange.upperBound(upper, true) : undefined;
          const os = tx.objectStore(store);
          const [keys, values] = await Promise.all([promised(os.getAllKeys(range, limit)), promised(os.getAll(range, limit))]);
          return keys.map((k, i) => [k, values[i]]);
        },
      };
      tx.oncomplete = () => (failed ? reject(failed) : resolve(result));
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

function mapError(e) {
  if (e && (e.name === "QuotaExceededError" || /quota/i.test(e.message || ""))) {
    return new MasqError("quota", "the browser's storage for this site is full (IndexedDB quota): nothing of this change was written; free space or delete data");
  }
  return new MasqError("io", `IndexedDB failed: ${e ? e.name + ": " + e.message : "aborted"}`);
}

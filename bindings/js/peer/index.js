/**
 * Peer mode: the page is a Masq device of its own — no daemon. Its data is
 * kept in IndexedDB (per origin), it has its own device identity
 * (non-extractable WebCrypto keys kept in IndexedDB), pairs with any Masq
 * device through a relay, and syncs with the same wire protocol and merge
 * rules as the Swift kernel (docs/PROTOCOL.md). The app-facing API is
 * masq.js's MasqApp's: get, put, delete, list, getAll, setAll, clear,
 * counterAdd, counter, watch, close.
 *
 *     import { connect } from "./masq.js";
 *     const app = await connect({ name: "Notes", mode: "auto" });   // masqd if it answers, else peer mode
 *     if (app.mode === "peer" && location.hash.startsWith("#masq-pair=")) {
 *       const { device } = await app.pair(location.href);            // the QR code the desktop showed
 *       console.log("paired with", device.name, device.fingerprint);
 *     }
 *     await app.counterAdd("likes", 1);
 *
 * One tab of an origin holds the store at a time (Web Locks): a second tab
 * gets MasqError "busy" (or waits, with `waitForLock`).
 * @module masq/peer
 */
import { PeerStore } from "./store.js";
import { MemoryBackend, IndexedDBBackend } from "./backend.js";
import { SyncService } from "./service.js";
import { generateIdentity, deviceId, fingerprint } from "./identity.js";
import { parseLink, joinOverRelay } from "./pairing.js";
import { utf8, fromUtf8, b64url } from "./bytes.js";
import { MasqError } from "./errors.js";

/**
 * @typedef {Object} PeerOptions
 * @property {string} [name] - the app's name (shown nowhere yet; kept for the daemon-mode signature)
 * @property {string} [namespace] - default "web:" + the page's origin (what masqd would give this app)
 * @property {string} [database] - the IndexedDB database (default "masq")
 * @property {boolean} [memory] - keep nothing (tests, private pages)
 * @property {string} [deviceName] - what other devices list (default from the browser)
 * @property {string} [relay] - the relay to sync through (default: the one the pairing link named)
 * @property {boolean} [waitForLock] - wait for another tab to close instead of failing "busy"
 * @property {(state: string) => void} [onStateChange] - "offline", "online"
 * @property {(event: Object) => void} [onEvent] - sync events: progress, problem, rejected, garbage, removed
 * @property {() => number} [now] - the wall clock (tests)
 */

/**
 * Open (or create) this page's Masq device.
 * @param {PeerOptions} [options]
 * @returns {Promise<PeerApp>}
 */
export async function openPeer(options = {}) {
  const app = new PeerApp(options);
  await app._open();
  return app;
}

const enc = (k) => (k instanceof Uint8Array ? k : utf8.encode(String(k)));
function dec(b, binary) {
  if (b === undefined || b === null) return b;
  if (binary) return b;
  try {
    return fromUtf8.decode(b);
  } catch (_) {
    return b;
  }
}
const keyOut = (b) => dec(b, false);

/** A page's own Masq device (peer mode). */
export class PeerApp {
  /** @param {PeerOptions} options */
  constructor(options) {
    this.options = options;
    this.mode = "peer";
    this.namespace = options.namespace || (globalThis.location ? `web:${globalThis.location.origin}` : "web:local");
    this._watches = new Set();
    this._state = "offline";
    this.service = null;
  }

  get state() {
    return this._state;
  }

  async _open() {
    const database = this.options.database || "masq";
    if (!this.options.memory && globalThis.navigator && navigator.locks) {
      // One writer per origin and database: the lock is held until close().
      this._lockReleased = new Promise((resolve) => { this._releaseLock = resolve; });
      const got = await new Promise((resolve, reject) => {
        navigator.locks.request(`masq:${database}`, { ifAvailable: !this.options.waitForLock }, (lock) => {
          resolve(!!lock);
          return lock ? this._lockReleased : undefined;
        }).catch(reject);
      });
      if (!got) {
        throw new MasqError("busy", "Masq is already open in another tab or window of this site; close it (or open with waitForLock) — one tab writes at a time, so nothing is lost");
      }
    }
    this.backend = this.options.memory ? new MemoryBackend() : await IndexedDBBackend.open(database);
    if (this.options.maxBytes) this.setStorageLimit(this.options.maxBytes);
    this.store = await new PeerStore(this.backend, { now: this.options.now }).open();
    let identity = await this.store.getMeta("identity");
    if (!identity) {
      identity = await generateIdentity();
      await this.store.putMeta("identity", identity);
    }
    this.identity = identity;
    this.deviceId = await deviceId(identity.agreement.publicKey);
    this.store.listeners.add((changes) => this._dispatch(changes));
    await this._startSync();
  }

  /** This device: id, name, fingerprint (what the other device's screen shows for it). */
  async device() {
    const fp = await fingerprint(this.identity.agreement.publicKey);
    return { deviceId: this.deviceId, name: await this._name(), fingerprint: fp.digits, fingerprintEmoji: fp.emoji };
  }

  async _name() {
    return (await this.store.getMeta("name")) || this.options.deviceName || defaultName();
  }

  /** Rename this device (what other devices list). @param {string} name */
  async setDeviceName(name) {
    if (typeof name !== "string" || !name || utf8.encode(name).length > 64 || /[\u0000-\u001f]/.test(name)) {
      throw new MasqError("invalid", "a device name is 1 to 64 bytes of text without control characters");
    }
    await this.store.putMeta("name", name);
  }

  async _devices() {
    return new Map(Object.entries((await this.store.getMeta("devices")) || {}));
  }

  /**
   * The devices this one is paired with.
   * @returns {Promise<Array<{deviceId: string, name: string, pairedAt: number, suite: string, fingerprint: string, fingerprintEmoji: string}>>}
   */
  async devices() {
    const out = [];
    for (const [id, d] of await this._devices()) {
      const fp = await fingerprint(d.agreement);
      out.push({ deviceId: id, name: d.name, pairedAt: d.pairedAt, suite: "AESGCM", fingerprint: fp.digits, fingerprintEmoji: fp.emoji });
    }
    return out.sort((a, b) => a.pairedAt - b.pairedAt);
  }

  /**
   * Join the device that showed `link` (a masq://pair/… link, or the web
   * link with #masq-pair=… — e.g. `location.href` of the page a QR code
   * opened). Resolves once both devices stored each other; sync then starts.
   * Rejects "invalid" for a malformed link, "denied" for a wrong or used
   * one, "unavailable" when the relay cannot be reached, "timeout".
   * @param {string} link
   * @param {{timeout?: number, relay?: string}} [options]
   * @returns {Promise<{device: {deviceId: string, name: string, fingerprint: string, fingerprintEmoji: string}}>}
   */
  async pair(link, options = {}) {
    const parsed = await parseLink(link);
    const result = await joinOverRelay(parsed, this.identity, await this._name(), { timeout: options.timeout, relayUrl: options.relay });
    const id = await deviceId(result.card.agreement);
    if (id === this.deviceId) throw new MasqError("invalid", "a device cannot pair with itself");
    const devices = await this._devices();
    devices.set(id, { name: result.card.name, signing: result.card.signing, agreement: result.card.agreement, pairedAt: Date.now(), suite: 2 });
    await this.store.backend.tx("readwrite", async (t) => {
      t.put("meta", "devices", Object.fromEntries(devices));
      t.put("meta", "session:" + id, result.session.toRecord());
      t.put("meta", "room", result.groupRoom);
      t.put("meta", "relay", this.options.relay || result.relay);
      t.del("meta", "renewal:" + id);
    });
    await this._startSync(true);
    const fp = await fingerprint(result.card.agreement);
    return { device: { deviceId: id, name: result.card.name, fingerprint: fp.digits, fingerprintEmoji: fp.emoji } };
  }

  /** Forget a paired device (its session goes; it reads nothing sealed afterwards). */
  async removeDevice(id) {
    await this._forget(id);
    await this._startSync(true);
  }

  async _forget(id) {
    const devices = await this._devices();
    if (!devices.delete(id)) throw new MasqError("not_found", `no paired device ${id}`);
    await this.store.backend.tx("readwrite", async (t) => {
      t.put("meta", "devices", Object.fromEntries(devices));
      t.del("meta", "session:" + id);
      t.del("meta", "renewal:" + id);
    });
  }

  async _startSync(restart = false) {
    if (this.service && !restart) return;
    if (this.service) {
      this.service.stop();
      this.service = null;
    }
    const room = await this.store.getMeta("room");
    const relay = this.options.relay || (await this.store.getMeta("relay"));
    if (!room || !relay || !(await this._devices()).size || this._closed) return;
    this.service = new SyncService({
      store: this.store, identity: this.identity, deviceId: this.deviceId, room, relay,
      devices: () => this._devices(),
      forget: async (id) => { await this._forget(id).catch(() => {}); },
      onEvent: (e) => {
        if (e.type === "state") this._setState(e.connected ? "online" : "offline");
        if (this.options.onEvent) this.options.onEvent(e);
      },
    });
    await this.service.start();
  }

  _setState(s) {
    if (s === this._state) return;
    this._state = s;
    if (this.options.onStateChange) this.options.onStateChange(s);
  }

  /** Sync status: connected, per device what each side still lacks, problems. */
  async status() {
    if (!this.service) return { connected: false, devices: (await this.devices()).map((d) => ({ ...d, present: false, theyLack: 0, weLack: 0 })), pending: 0 };
    return this.service.status();
  }

  /** Resolve once every present device has nothing the other lacks (or reject at `timeout` ms). */
  /** Cap what this site's storage may hold (bytes; null: the browser's quota
   *  alone). A change that would pass it is refused whole with "quota", as
   *  when the browser's own quota is reached. */
  setStorageLimit(bytes) {
    if (bytes !== null && !(Number.isSafeInteger(bytes) && bytes > 0)) throw new MasqError("invalid", "the storage limit is a positive number of bytes (or null)");
    if (this.backend instanceof MemoryBackend) this.backend.quota = bytes;
    else this.backend.maxBytes = bytes;
  }

  async synced(timeout = 30000) {
    const end = Date.now() + timeout;
    while (Date.now() < end) {
      const s = await this.status();
      if (s.connected && s.devices.length && s.devices.every((d) => d.present && d.theyLack === 0 && d.weLack === 0)
        && this.service.engine.heardFrom(new Set(s.devices.map((d) => d.deviceId)))) return s;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new MasqError("timeout", "not in sync yet");
  }

  _ns(options) {
    return (options && options.ns) || this.namespace;
  }

  _live() {
    if (this._closed) throw new MasqError("closed", "this Masq store was closed");
  }

  // ---- the app API (as MasqApp) ----------------------------------------------

  /** @param {string} key @param {{ns?: string, binary?: boolean}} [options] */
  async get(key, options = {}) {
    this._live();
    return dec(await this.store.get(this._ns(options), enc(key)), options.binary);
  }

  /** @param {string} key @param {string|Uint8Array} value @param {{ns?: string}} [options] */
  async put(key, value, options = {}) {
    this._live();
    if (typeof value !== "string" && !(value instanceof Uint8Array)) throw new MasqError("bad_request", "a value is a string or a Uint8Array (use JSON.stringify for objects)");
    await this.store.put(this._ns(options), enc(key), enc(value));
  }

  /** @param {string} key @param {{ns?: string}} [options] */
  async delete(key, options = {}) {
    this._live();
    await this.store.del(this._ns(options), enc(key));
  }

  /** Alias of delete. */
  async del(key, options = {}) {
    return this.delete(key, options);
  }

  /**
   * @param {string} [prefix]
   * @param {{ns?: string, keysOnly?: boolean, limit?: number, binary?: boolean}} [options]
   */
  async list(prefix = "", options = {}) {
    this._live();
    const limit = options.limit || 0;
    const rows = await this.store.list(this._ns(options), enc(prefix), { limit: limit ? limit + 1 : 0 });
    const more = limit ? rows.length > limit : false;
    const entries = (limit ? rows.slice(0, limit) : rows).map((e) => (options.keysOnly ? { key: keyOut(e.key) } : { key: keyOut(e.key), value: dec(e.value, options.binary) }));
    return { entries, more };
  }

  /** @param {{ns?: string}} [options] @returns {Promise<Object<string, string|Uint8Array>>} */
  async getAll(options = {}) {
    this._live();
    const out = {};
    for (const e of await this.store.list(this._ns(options))) {
      const k = keyOut(e.key);
      out[typeof k === "string" ? k : b64url(k)] = dec(e.value, false);
    }
    return out;
  }

  /**
   * @param {Object<string, string|null>|Array<[string, string|null]>} entries
   * @param {{ns?: string, replace?: boolean}} [options]
   */
  async setAll(entries, options = {}) {
    this._live();
    const pairs = Array.isArray(entries) ? entries : Object.entries(entries);
    await this.store.setAll(this._ns(options), pairs.map(([k, v]) => [enc(k), v === null || v === undefined ? null : enc(typeof v === "string" || v instanceof Uint8Array ? v : String(v))]), !!options.replace);
  }

  /** @param {{ns?: string}} [options] */
  async clear(options = {}) {
    this._live();
    await this.store.clear(this._ns(options));
  }

  /** @param {string} key @param {number} delta @param {{ns?: string}} [options] */
  async counterAdd(key, delta, options = {}) {
    this._live();
    if (!Number.isSafeInteger(delta) && typeof delta !== "bigint") throw new MasqError("bad_request", "delta is an integer");
    await this.store.counterAdd(this._ns(options), enc(key), BigInt(delta));
  }

  /** @param {string} key @param {{ns?: string}} [options] @returns {Promise<number>} */
  async counter(key, options = {}) {
    this._live();
    return Number(await this.store.counterGet(this._ns(options), enc(key)));
  }

  /**
   * Call `callback` for every later change under `prefix` — made here or by
   * another device. Resolves to a function that stops the watch.
   * @param {(change: Object) => void} callback
   * @param {{prefix?: string, ns?: string}} [options]
   */
  async watch(callback, options = {}) {
    this._live();
    const w = { callback, prefix: enc(options.prefix || ""), ns: this._ns(options) };
    this._watches.add(w);
    return async () => { this._watches.delete(w); };
  }

  _dispatch(changes) {
    for (const c of changes) {
      for (const w of this._watches) {
        if (c.ns !== w.ns || c.key.length < w.prefix.length || !w.prefix.every((b, i) => c.key[i] === b)) continue;
        const change = { kind: c.kind, origin: c.origin, ns: c.ns, key: keyOut(c.key), value: c.value === null ? null : dec(c.value, false) };
        if (c.kind === "conflict") change.lostValue = c.lostValue === null || c.lostValue === undefined ? null : dec(c.lostValue, false);
        try {
          w.callback(change);
        } catch (e) {
          setTimeout(() => { throw e; });
        }
      }
    }
  }

  /** Stop syncing, close the store and let another tab open it. */
  close() {
    this._closed = true;
    if (this.service) this.service.stop();
    this.service = null;
    if (this.backend) this.backend.close();
    if (this._releaseLock) this._releaseLock();
    this._setState("closed");
  }
}

function defaultName() {
  const ua = (globalThis.navigator && navigator.userAgent) || "";
  const kind = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iPhone" : /Mobile/.test(ua) ? "phone" : "browser";
  const host = globalThis.location ? location.hostname : "";
  return `${kind}${host ? " (" + host + ")" : ""}`.slice(0, 64);
}

/**
 * masq.js — talk to the local Masq daemon (masqd) from a web page.
 *
 * One ES module, no dependencies, no build step. masqd serves it too:
 *
 *     import { connect } from "http://localhost:7071/masq.js";
 *     const app = await connect({
 *       name: "Notes", description: "Keeps my notes",
 *       onApprovalNeeded: () => banner("Approve Notes in the Masq manager"),
 *     });
 *     await app.put("greeting", "hello");
 *     const stop = await app.watch((change) => console.log(change.key, change.value));
 *     const { link, qrSvg } = await app.share("Bob");   // the user approves; send Bob the link
 *
 * The first connect registers the page's origin and waits until the user
 * approves it in the manager; the token it then receives is kept in
 * localStorage, so later visits are approved at once. If no daemon answers,
 * connect() rejects with a MasqError whose code is "unavailable" (after
 * `timeout` ms) — it never hangs. The wire protocol is docs/APP-PROTOCOL.md.
 *
 * @module masq
 */

/** Where masqd listens unless told otherwise. */
export const DEFAULT_URL = "ws://localhost:7071/";

/**
 * Every failure: `code` is stable ("unavailable", "denied", "revoked",
 * "unauthorized", "not_found", "rate_limited", "too_large", "bad_request",
 * "timeout", "locked", …); `message` is for people.
 */
export class MasqError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "MasqError";
    /** @type {string} */
    this.code = code;
  }
}

/**
 * @typedef {Object} ConnectOptions
 * @property {string} [url] - the daemon's WebSocket URL (default DEFAULT_URL)
 * @property {string} name - what the user sees in the manager (required to register)
 * @property {string} [description]
 * @property {string} [icon] - a data:image/... URL
 * @property {string} [appId] - native programs only (a page is known by its origin)
 * @property {string} [token] - a token from an earlier approval (default: the one kept in storage)
 * @property {Storage|null} [storage] - where the token is kept (default localStorage; null: nowhere)
 * @property {number} [timeout] - ms to wait for the daemon to answer (default 3000)
 * @property {number} [approvalTimeout] - ms to wait for the user's approval (default: no limit)
 * @property {number} [requestTimeout] - ms to wait for any answer (default 15000)
 * @property {boolean} [reconnect] - reconnect after the connection drops (default true)
 * @property {() => void} [onApprovalNeeded] - called when the user must approve this app
 * @property {(state: string) => void} [onStateChange] - "connecting", "pending", "approved", "revoked", "closed"
 * @property {"daemon"|"peer"|"auto"} [mode] - "daemon" (default): masqd only; "peer": this page is a Masq
 *   device of its own (IndexedDB, WebCrypto, pairing and sync through a relay: bindings/js/peer/); "auto":
 *   masqd if it answers within `timeout`, else peer mode. Peer mode takes the options of openPeer too.
 * @property {(share: Share) => void} [onShare] - one of this app's shares changed (the other person
 *   accepted, the owner answered, someone else used the link, it ended: status "ended")
 */

/**
 * A share of a namespace with another person (see MasqApp#share).
 * @typedef {Object} Share
 * @property {string} id - the same on both sides
 * @property {string|null} namespace - the local namespace (null until the owner answers a link accepted here);
 *   pass it as `ns` to read and write the shared data
 * @property {"owner"|"guest"} role - "owner": shared by this app; "guest": accepted by this app
 * @property {"read-write"|"read-only"} access
 * @property {"offered"|"claimed"|"active"|"intercepted"|"ended"} status - "offered": nobody accepted the
 *   link yet; "claimed": accepted, waiting for the owner; "intercepted": someone else used the link first
 * @property {string|null} nickname - what the user calls the other person
 * @property {string|null} fingerprint - 30 digits in groups of 5, once the other side answered: the two
 *   people compare it (out of band); the same on both sides unless someone sits in between
 * @property {string|null} fingerprint_emoji - the same fingerprint as emoji
 * @property {number} created_at - Unix ms
 * @property {number} last_heard_at - Unix ms (0: never)
 * @property {number} refused - messages refused (forged, replayed, beyond the share's rights)
 * @property {string[]} warnings - for the user
 */

/**
 * What this device holds of one blob (see MasqApp#putBlob).
 * @typedef {Object} BlobInfo
 * @property {string} id - the blob's manifest hash (64 hex digits), the same on every device
 * @property {number} size
 * @property {number} chunk_size
 * @property {number} chunks
 * @property {string|null} content_type
 * @property {string|null} name
 * @property {boolean} complete - every chunk is on this device (else getBlob rejects with "unavailable")
 * @property {boolean} manifest
 * @property {number} present_chunks
 * @property {number} present_bytes
 * @property {number} missing_chunks
 * @property {number} fetching_since - Unix ms this device first asked for it (0: not asked)
 * @property {number} new_chunks - putBlob: chunks the upload added (0: the store held them all)
 * @property {number} new_bytes
 */

/**
 * @typedef {Object} Change
 * @property {"put"|"delete"|"conflict"} kind - "conflict": a concurrent write lost to `value`
 * @property {"local"|"remote"} origin - "remote": it arrived from another device
 * @property {string} ns
 * @property {string|Uint8Array} key
 * @property {string|Uint8Array|null} value - null for a delete
 * @property {string|Uint8Array|null} [lostValue] - conflicts only
 */

/**
 * Connect, register if needed, and resolve once this app is approved.
 * @param {ConnectOptions} options
 * @returns {Promise<MasqApp>}
 */
export async function connect(options = {}) {
  // Peer mode (bindings/js/peer/): the page is a Masq device of its own when
  // asked ("peer"), or when no daemon answers ("auto"). Same API either way.
  if (options.mode === "peer") return (await import("./peer/index.js")).openPeer(options);
  const app = new MasqApp(options);
  try {
    await app._start();
  } catch (e) {
    if (options.mode === "auto" && e instanceof MasqError && e.code === "unavailable") {
      app.close();
      return (await import("./peer/index.js")).openPeer(options);
    }
    throw e;
  }
  return app;
}

/** Peer mode directly (see bindings/js/peer/index.js). */
export async function openPeer(options = {}) {
  return (await import("./peer/index.js")).openPeer(options);
}

/** An approved app's handle on its namespace (and on those it was granted). */
export class MasqApp {
  /** @param {ConnectOptions} options */
  constructor(options) {
    this._options = { timeout: 3000, requestTimeout: 15000, reconnect: true, ...options };
    /** "daemon" here; "peer" for a page that is its own Masq device (bindings/js/peer/). */
    this.mode = "daemon";
    this._url = options.url || DEFAULT_URL;
    this._storage = options.storage !== undefined ? options.storage : (globalThis.localStorage || null);
    this._tokenKey = `masq.token.${this._url}`;
    this._token = options.token || this._readToken();
    this._nextId = 1;
    /** @type {Map<number, {resolve: Function, reject: Function, timer: any}>} */
    this._pending = new Map();
    /** Requests beyond the window, sent as answers come back (masqd closes a
     *  connection with more than 256 requests waiting for their answers). */
    this._queued = [];
    /** Writes whose connection dropped before the answer: sent again once re-approved. */
    this._retry = [];
    /** watch handle -> {callback, prefix, ns, id}: survives reconnects */
    this._watches = new Map();
    this._state = "connecting";
    this._closedByUser = false;
    this._backoff = 250;
    this._approval = null;
    /** Share requests waiting for the user's answer: request id -> {resolve, reject, timer}. */
    this._shareWaits = new Map();
    /** Answers that arrived before anyone waited for them. */
    this._shareAnswers = new Map();
    /** @type {((share: Share) => void)|null} called when one of this app's shares changes */
    this.onShare = options.onShare || null;
    this.namespace = null;
  }

  /** @returns {string} "connecting", "pending", "approved", "revoked" or "closed" */
  get state() {
    return this._state;
  }

  /**
   * The value of `key`, or undefined when absent.
   * @param {string} key
   * @param {{ns?: string, binary?: boolean}} [options] - binary: return a Uint8Array
   * @returns {Promise<string|Uint8Array|undefined>}
   */
  async get(key, options = {}) {
    const r = await this._request({ op: "get", key, ns: options.ns, encoding: options.binary ? "base64" : undefined });
    if (!r.found) return undefined;
    return options.binary ? base64ToBytes(r.value) : decodeValue(r, "value");
  }

  /**
   * Store `value` (a string, or a Uint8Array for binary data) under `key`.
   * @param {string} key
   * @param {string|Uint8Array} value
   * @param {{ns?: string}} [options]
   * @returns {Promise<void>}
   */
  async put(key, value, options = {}) {
    await this._request({ op: "put", key, ns: options.ns, ...encodeValue(value) });
  }

  /**
   * Delete `key` (deleting an absent key is fine).
   * @param {string} key
   * @param {{ns?: string}} [options]
   * @returns {Promise<void>}
   */
  async delete(key, options = {}) {
    await this._request({ op: "del", key, ns: options.ns });
  }

  /**
   * Entries whose key starts with `prefix`, in key order.
   * @param {string} [prefix]
   * @param {{ns?: string, keysOnly?: boolean, limit?: number, binary?: boolean}} [options]
   * @returns {Promise<{entries: Array<{key: string|Uint8Array, value?: string|Uint8Array}>, more: boolean}>}
   */
  async list(prefix = "", options = {}) {
    const r = await this._request({
      op: "list", prefix, ns: options.ns, keys_only: options.keysOnly, limit: options.limit,
      encoding: options.binary ? "base64" : undefined,
    });
    return { entries: r.entries.map((e) => decodeEntry(e, options.binary)), more: r.more };
  }

  /**
   * Every entry of the namespace as an object (key -> value).
   * @param {{ns?: string}} [options]
   * @returns {Promise<Object<string, string|Uint8Array>>}
   */
  async getAll(options = {}) {
    const r = await this._request({ op: "get_all", ns: options.ns });
    const out = {};
    for (const e of r.entries.map((x) => decodeEntry(x, false))) out[typeof e.key === "string" ? e.key : bytesToBase64(e.key)] = e.value;
    return out;
  }

  /**
   * Write several entries in one transaction; a null value deletes the key.
   * @param {Object<string, string|null>|Array<[string, string|null]>} entries
   * @param {{ns?: string, replace?: boolean}} [options] - replace: the namespace becomes exactly `entries`
   * @returns {Promise<void>}
   */
  async setAll(entries, options = {}) {
    const pairs = Array.isArray(entries) ? entries : Object.entries(entries);
    await this._request({
      op: "set_all", ns: options.ns, replace: options.replace,
      entries: pairs.map(([key, value]) => ({ key, value: value === null || value === undefined ? null : String(value) })),
    });
  }

  /**
   * Delete every key of the namespace.
   * @param {{ns?: string}} [options]
   * @returns {Promise<void>}
   */
  async clear(options = {}) {
    await this._request({ op: "clear", ns: options.ns });
  }

  /**
   * Add `delta` to a counter (concurrent additions on several devices all count).
   * @param {string} key
   * @param {number} delta - an integer, may be negative
   * @param {{ns?: string}} [options]
   * @returns {Promise<void>}
   */
  async counterAdd(key, delta, options = {}) {
    await this._request({ op: "counter_add", key, delta, ns: options.ns });
  }

  /**
   * A counter's total (0 when absent).
   * @param {string} key
   * @param {{ns?: string}} [options]
   * @returns {Promise<number>}
   */
  async counter(key, options = {}) {
    return (await this._request({ op: "counter_get", key, ns: options.ns })).value;
  }

  /**
   * Call `callback` for every later change under `prefix` — made by this
   * app, another app, or another device. Watches are renewed after a
   * reconnect. Resolves to a function that stops the watch.
   * @param {(change: Change) => void} callback
   * @param {{prefix?: string, ns?: string}} [options]
   * @returns {Promise<() => Promise<void>>}
   */
  async watch(callback, options = {}) {
    const handle = {};
    const entry = { callback, prefix: options.prefix || "", ns: options.ns, id: null };
    entry.id = (await this._request({ op: "watch", prefix: entry.prefix, ns: entry.ns })).watch;
    this._watches.set(handle, entry);
    return async () => {
      if (!this._watches.delete(handle)) return;
      if (this._state === "approved") await this._request({ op: "unwatch", watch: entry.id }).catch(() => {});
    };
  }

  /**
   * Ask to share this app's namespace with another person, whom the user
   * calls `nickname`. The user approves the request in the Masq manager; the
   * promise then resolves to the single-use link to send that person (through
   * any messenger) and its QR code as SVG text. Rejects with code "denied" if
   * the user refuses, "unavailable" if no sharing service is set up or the
   * connection drops before the answer, "timeout" after `options.timeout` ms
   * (default: no limit). Follow the share with `onShare` or `shares()`.
   * @param {string} nickname - 1-64 bytes, no control characters or bidirectional overrides
   * @param {{readOnly?: boolean, base?: string, timeout?: number}} [options] - readOnly: the other person
   *   may read but not write; base: the page the link opens (a page: on its own origin), default masq://share/
   * @returns {Promise<{share: Share, link: string, qrSvg: string}>}
   */
  async share(nickname, options = {}) {
    const r = await this._request({ op: "share.create", nickname, read_only: options.readOnly || undefined, base: options.base });
    const answer = await this._awaitShare(r.request, options.timeout);
    return { share: answer.share, link: answer.link, qrSvg: answer.qr_svg };
  }

  /**
   * Ask to accept another person's share link, whom the user calls
   * `nickname`. The user approves it in the Masq manager; the promise then
   * resolves to the share (status "claimed"): once the owner answers, an
   * `onShare` call brings its namespace (read and write it with `{ns}`) and
   * the fingerprint. Rejects with "invalid" for a malformed or foreign link,
   * "denied" for a link accepted already or a refusal, as `share` otherwise.
   * @param {string} link
   * @param {string} nickname
   * @param {{timeout?: number}} [options]
   * @returns {Promise<Share>}
   */
  async acceptShare(link, nickname, options = {}) {
    const r = await this._request({ op: "share.accept", link, nickname });
    return (await this._awaitShare(r.request, options.timeout)).share;
  }

  /**
   * This app's shares (made or accepted by it), oldest first.
   * @returns {Promise<Share[]>}
   */
  async shares() {
    return (await this._request({ op: "share.list" })).shares;
  }

  /**
   * End one of this app's shares: the other side is told; the data stays
   * on both sides, and later changes no longer travel.
   * @param {string} shareId
   * @returns {Promise<void>}
   */
  async unshare(shareId) {
    await this._request({ op: "share.remove", share: shareId });
  }

  /**
   * Store file-sized data under `key` as a blob (docs/APP-PROTOCOL.md,
   * "Blobs"): it goes up in parts of at most 512 KiB, straight into the
   * store's 1 MiB chunks (each stored once, however many keys share it), and
   * the key changes only once every part arrived. The key then holds a small
   * reference that syncs like any value; your other devices fetch the
   * chunks. An upload does not survive a dropped connection: the promise
   * rejects (the key unchanged) and putBlob may simply be called again —
   * chunks already stored are not sent to the store twice.
   * @param {string} key
   * @param {Blob|ArrayBuffer|ArrayBufferView|ReadableStream<Uint8Array>} data - a File or Blob is read slice by slice
   * @param {{ns?: string, contentType?: string, name?: string, onProgress?: (sent: number, total: number|null) => void}} [options]
   *   contentType and name default to a File's own
   * @returns {Promise<BlobInfo>}
   */
  async putBlob(key, data, options = {}) {
    const isBlob = typeof Blob !== "undefined" && data instanceof Blob;
    const contentType = options.contentType ?? (isBlob && data.type ? data.type : undefined);
    const name = options.name ?? (isBlob && typeof data.name === "string" ? data.name : undefined);
    const total = isBlob ? data.size : (data && typeof data.byteLength === "number" ? data.byteLength : null);
    const begun = await this._request({ op: "blob.begin", key, ns: options.ns, content_type: contentType, name });
    const upload = begun.upload;
    let offset = 0;
    try {
      for await (const part of blobParts(data, begun.max_part_bytes || BLOB_PART_BYTES)) {
        offset = (await this._request({ op: "blob.part", upload, offset, data: partToBase64(part) })).received;
        if (options.onProgress) options.onProgress(offset, total);
      }
      return await this._request({ op: "blob.commit", upload });
    } catch (error) {
      this._request({ op: "blob.abort", upload }).catch(() => {});
      throw error;
    }
  }

  /**
   * Read the blob under `key` (or a range of it) as a Blob of its content
   * type. Rejects with code "unavailable" while some of its chunks have not
   * reached this device yet (the request starts fetching them: follow with
   * blobInfo, or call fetchBlob first), "invalid" if the key holds an
   * ordinary value, "not_found" if it is absent.
   * @param {string} key
   * @param {{ns?: string, offset?: number, length?: number, onProgress?: (received: number, total: number) => void}} [options]
   * @returns {Promise<Blob>}
   */
  async getBlob(key, options = {}) {
    const info = await this.blobInfo(key, options);
    const start = options.offset || 0;
    const end = options.length === undefined ? info.size : Math.min(info.size, start + options.length);
    const parts = [];
    let offset = start;
    while (offset < end) {
      const r = await this._request({
        op: "blob.read", key, ns: options.ns, offset, length: Math.min(BLOB_PART_BYTES, end - offset),
      });
      const bytes = base64ToBytes(r.data);
      if (bytes.length === 0) break;
      parts.push(bytes);
      offset += bytes.length;
      if (options.onProgress) options.onProgress(offset - start, end - start);
    }
    return new Blob(parts, { type: info.content_type || "" });
  }

  /**
   * What this device holds of the blob under `key`.
   * @param {string} key
   * @param {{ns?: string}} [options]
   * @returns {Promise<BlobInfo>}
   */
  async blobInfo(key, options = {}) {
    return await this._request({ op: "blob.info", key, ns: options.ns });
  }

  /**
   * Ask for the blob's chunks from the user's other devices (a device that
   * fetches blobs on demand); resolves at once — follow with blobInfo.
   * @param {string} key
   * @param {{ns?: string}} [options]
   * @returns {Promise<void>}
   */
  async fetchBlob(key, options = {}) {
    await this._request({ op: "blob.fetch", key, ns: options.ns });
  }

  /** Close the connection for good (no reconnect). */
  close() {
    this._closedByUser = true;
    this._setState("closed");
    if (this._ws) this._ws.close(1000);
    this._failAll(new MasqError("closed", "the app closed its connection"));
  }

  // ---- internals --------------------------------------------------------

  async _start() {
    await this._open();
    await this._authenticate(true);
  }

  /** Open the socket; reject with "unavailable" if no daemon answers in time. */
  _open() {
    return new Promise((resolve, reject) => {
      let settled = false;
      let ws;
      const fail = (why) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        try { ws && ws.close(); } catch (_) { /* already closed */ }
        reject(new MasqError("unavailable", `no Masq daemon answers at ${this._url} (${why}); is masqd running?`));
      };
      const timer = setTimeout(() => fail("timed out"), this._options.timeout);
      try {
        ws = new WebSocket(this._url);
      } catch (e) {
        fail(String(e && e.message || e));
        return;
      }
      ws.onopen = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this._ws = ws;
        ws.onmessage = (m) => this._onMessage(m.data);
        ws.onclose = (e) => this._onClose(e);
        resolve();
      };
      ws.onerror = () => fail("connection refused");
      ws.onclose = () => fail("connection closed");
    });
  }

  /** hello with the token; else register and wait for the user. */
  async _authenticate(first) {
    const hello = await this._send({ op: "hello", token: this._token || undefined, app_id: this._options.appId });
    if (hello.state === "approved") {
      this.namespace = hello.namespace;
      this._backoff = 250;
      this._setState("approved");
      await this._renewWatches();
      const retry = this._retry.splice(0);
      for (const waiting of retry) this._send(waiting.body).then(waiting.resolve, waiting.reject);
      return;
    }
    for (const waiting of this._retry.splice(0)) waiting.reject(new MasqError("revoked", "this app is no longer approved"));
    if (!first) {
      // Reconnected but no longer approved (revoked, or another profile): stop here.
      this._setState("revoked");
      this._failAll(new MasqError("revoked", "this app is no longer approved"));
      this._ws.close(1000);
      return;
    }
    if (!this._options.name) throw new MasqError("bad_request", "connect() needs a name to register this app");
    const approval = new Promise((resolve, reject) => { this._approval = { resolve, reject }; });
    await this._send({
      op: "register", name: this._options.name, description: this._options.description,
      icon: this._options.icon, app_id: this._options.appId,
    });
    this._setState("pending");
    if (this._options.onApprovalNeeded) this._options.onApprovalNeeded();
    let timer;
    if (this._options.approvalTimeout) {
      timer = setTimeout(() => this._approval && this._approval.reject(
        new MasqError("timeout", "the user did not approve this app in time")), this._options.approvalTimeout);
    }
    try {
      await approval;
    } finally {
      clearTimeout(timer);
      this._approval = null;
    }
  }

  /** The user's answer to share request `request` (the share_approved event). */
  _awaitShare(request, timeout) {
    const early = this._shareAnswers.get(request);
    if (early) {
      this._shareAnswers.delete(request);
      return early.ok ? Promise.resolve(early.message) : Promise.reject(early.error);
    }
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, timer: null };
      if (timeout) {
        entry.timer = setTimeout(() => {
          this._shareWaits.delete(request);
          reject(new MasqError("timeout", "the user did not answer the share request in time"));
        }, timeout);
      }
      this._shareWaits.set(request, entry);
    });
  }

  /** Settle the wait for a share request (or keep the answer for a later wait). */
  _shareAnswer(m) {
    const outcome = m.event === "share_approved" ? { ok: true, message: m }
      : { ok: false, error: m.event === "share_denied" ? new MasqError("denied", "the user refused the share request")
        : new MasqError(m.error.code, m.error.message) };
    const waiting = this._shareWaits.get(m.request);
    if (!waiting) {
      this._shareAnswers.set(m.request, outcome);
      return;
    }
    this._shareWaits.delete(m.request);
    clearTimeout(waiting.timer);
    if (outcome.ok) waiting.resolve(outcome.message);
    else waiting.reject(outcome.error);
  }

  async _renewWatches() {
    for (const entry of this._watches.values()) {
      entry.id = (await this._send({ op: "watch", prefix: entry.prefix, ns: entry.ns })).watch;
    }
  }

  /** A request as an approved app. */
  _request(body) {
    if (this._state !== "approved") {
      return Promise.reject(new MasqError(this._state === "revoked" ? "revoked" : "unavailable",
        `not connected to Masq (state: ${this._state})`));
    }
    // Writes carry a request id: if the connection drops before the answer, the
    // write is sent again after reconnecting and masqd applies it at most once.
    if (WRITES.has(body.op)) body = { ...body, request_id: requestId() };
    return this._send(body);
  }

  _send(body) {
    return new Promise((resolve, reject) => {
      if (!this._ws || this._ws.readyState !== 1) {
        reject(new MasqError("unavailable", "not connected to Masq"));
        return;
      }
      const entry = { resolve, reject, body, timer: null };
      entry.timer = setTimeout(() => {
        for (const [id, waiting] of this._pending) if (waiting === entry) this._pending.delete(id);
        const at = this._queued.indexOf(entry);
        if (at >= 0) this._queued.splice(at, 1);
        reject(new MasqError("timeout", `no answer to ${body.op} within ${this._options.requestTimeout} ms`));
      }, this._options.requestTimeout);
      if (this._pending.size >= MAX_IN_FLIGHT) this._queued.push(entry);
      else this._transmit(entry);
    });
  }

  _transmit(entry) {
    const id = this._nextId++;
    this._pending.set(id, entry);
    this._ws.send(JSON.stringify({ id, ...entry.body }));
  }

  /** Send queued requests while the window has room. */
  _drain() {
    while (this._queued.length > 0 && this._pending.size < MAX_IN_FLIGHT && this._ws && this._ws.readyState === 1) {
      this._transmit(this._queued.shift());
    }
  }

  _onMessage(data) {
    let m;
    try {
      m = JSON.parse(data);
    } catch (_) {
      return;
    }
    if (m.event) {
      this._onEvent(m);
      return;
    }
    const waiting = this._pending.get(m.id);
    if (!waiting) return;
    this._pending.delete(m.id);
    clearTimeout(waiting.timer);
    this._drain();
    if (m.ok) waiting.resolve(m.result);
    else waiting.reject(new MasqError(m.error.code, m.error.message));
  }

  _onEvent(m) {
    switch (m.event) {
      case "change": {
        for (const entry of this._watches.values()) {
          if (entry.id !== m.watch) continue;
          const change = {
            kind: m.kind, origin: m.origin, ns: m.ns,
            key: m.key !== undefined ? m.key : base64ToBytes(m.key_b64),
            value: m.value === null ? null : decodeValue(m, "value"),
          };
          if (m.kind === "conflict") change.lostValue = m.lost_value === null ? null : decodeValue(m, "lost_value");
          try { entry.callback(change); } catch (e) { setTimeout(() => { throw e; }); }
        }
        break;
      }
      case "share_approved":
      case "share_denied":
      case "share_failed":
        this._shareAnswer(m);
        break;
      case "share":
        if (this.onShare) {
          try { this.onShare(m.share); } catch (e) { setTimeout(() => { throw e; }); }
        }
        break;
      case "approved":
        this._token = m.token;
        this._writeToken(m.token);
        this.namespace = m.namespace;
        this._setState("approved");
        if (this._approval) this._approval.resolve();
        break;
      case "denied":
      case "revoked":
        this._token = null;
        this._writeToken(null);
        this._setState("revoked");
        if (this._approval) this._approval.reject(new MasqError(m.event, `the user ${m.event === "denied" ? "denied" : "revoked"} this app`));
        this._failAll(new MasqError("revoked", "the user revoked this app"));
        break;
      default:
        break; // profile_changed, locked: the daemon closes the connection; we reconnect
    }
  }

  _onClose() {
    this._ws = null;
    // Writes in flight wait for the reconnection (their request ids make the retry safe).
    const queued = this._queued.splice(0);
    if (this._options.reconnect && !this._closedByUser && this._state === "approved") {
      for (const [id, waiting] of this._pending) {
        if (!waiting.body || !waiting.body.request_id) continue;
        clearTimeout(waiting.timer);
        this._retry.push(waiting);
        this._pending.delete(id);
      }
      for (const waiting of queued) {
        if (!waiting.body || !waiting.body.request_id) continue;
        clearTimeout(waiting.timer);
        this._retry.push(waiting);
      }
    }
    for (const waiting of queued) {
      if (this._retry.includes(waiting)) continue;
      clearTimeout(waiting.timer);
      waiting.reject(new MasqError("unavailable", "the connection to Masq closed"));
    }
    this._failAll(new MasqError("unavailable", "the connection to Masq closed"));
    if (this._closedByUser || this._state === "revoked" || !this._options.reconnect || this._state === "pending") {
      if (this._state === "pending" && this._approval) this._approval.reject(new MasqError("unavailable", "the connection to Masq closed"));
      if (this._state !== "revoked") this._setState("closed");
      return;
    }
    this._setState("connecting");
    const delay = this._backoff;
    this._backoff = Math.min(this._backoff * 2, 5000);
    setTimeout(async () => {
      if (this._closedByUser) return;
      try {
        await this._open();
        await this._authenticate(false);
      } catch (_) {
        if (!this._ws) this._onClose();
      }
    }, delay);
  }

  _failAll(error) {
    // Share requests go away with the connection that made them.
    for (const [request, waiting] of this._shareWaits) {
      clearTimeout(waiting.timer);
      waiting.reject(error);
      this._shareWaits.delete(request);
    }
    for (const [id, waiting] of this._pending) {
      clearTimeout(waiting.timer);
      waiting.reject(error);
      this._pending.delete(id);
    }
    for (const waiting of this._queued.splice(0)) {
      clearTimeout(waiting.timer);
      waiting.reject(error);
    }
  }

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    if (this._options.onStateChange) this._options.onStateChange(state);
  }

  _readToken() {
    try { return this._storage ? this._storage.getItem(this._tokenKey) : null; } catch (_) { return null; }
  }

  _writeToken(token) {
    try {
      if (!this._storage) return;
      if (token) this._storage.setItem(this._tokenKey, token);
      else this._storage.removeItem(this._tokenKey);
    } catch (_) { /* storage unavailable: the token lives for this page only */ }
  }
}

/** Operations that change data: they carry a request id (see _request). */
/** Requests sent before their answers come back (masqd allows 256 per connection). */
const MAX_IN_FLIGHT = 128;
const WRITES = new Set(["put", "del", "set_all", "clear", "counter_add"]);

/** 16 random bytes as hex: unique per write, so a retry is recognised. */
function requestId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function encodeValue(value) {
  if (value instanceof Uint8Array) return { value: bytesToBase64(value), encoding: "base64" };
  if (typeof value !== "string") throw new MasqError("bad_request", "a value is a string or a Uint8Array (use JSON.stringify for objects)");
  return { value };
}

function decodeValue(message, field) {
  if (message[field + "_b64"] !== undefined) return base64ToBytes(message[field + "_b64"]);
  return message[field];
}

function decodeEntry(e, binary) {
  const out = { key: e.key !== undefined ? e.key : base64ToBytes(e.key_b64) };
  if (binary && e.value !== undefined) out.value = base64ToBytes(e.value);
  else if (e.value !== undefined || e.value_b64 !== undefined) out.value = decodeValue(e, "value");
  return out;
}

/** Raw bytes per blob.part (base64 makes 683 KiB of a message of at most 1 MiB). */
const BLOB_PART_BYTES = 512 * 1024;

/** The parts of a Blob, buffer or stream, each at most `size` bytes. */
async function* blobParts(data, size) {
  if (typeof Blob !== "undefined" && data instanceof Blob) {
    for (let offset = 0; offset < data.size; offset += size) {
      yield new Uint8Array(await data.slice(offset, offset + size).arrayBuffer());
    }
    return;
  }
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    for (let offset = 0; offset < bytes.length; offset += size) yield bytes.subarray(offset, offset + size);
    return;
  }
  if (data && typeof data.getReader === "function") {
    const reader = data.getReader();
    let pending = new Uint8Array(size);
    let filled = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const chunk = value instanceof Uint8Array ? value : new Uint8Array(value);
      for (let at = 0; at < chunk.length;) {
        const n = Math.min(size - filled, chunk.length - at);
        pending.set(chunk.subarray(at, at + n), filled);
        filled += n;
        at += n;
        if (filled === size) {
          yield pending;
          pending = new Uint8Array(size);
          filled = 0;
        }
      }
    }
    if (filled > 0) yield pending.subarray(0, filled);
    return;
  }
  throw new MasqError("bad_request", "putBlob takes a Blob, an ArrayBuffer, a typed array or a ReadableStream");
}

/** Base64 of a part, 32 KiB of characters at a time. */
function partToBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function bytesToBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
  return btoa(text);
}

function base64ToBytes(b64) {
  const text = atob(b64);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/**
 * A client of `masq relay` (docs/PROTOCOL.md section 1) over the browser's
 * WebSocket: binary frames `u8 version(1) · u8 type · body`; JOIN / LEAVE /
 * SEND from the client, DELIVER / ERROR / PRESENCE from the relay. It
 * reconnects with backoff (0.25 s doubling to 5 s, with jitter), joins its
 * rooms again, and queues what is sent while disconnected (bounded). A
 * relay that sends garbage is counted and ignored, never trusted: payloads
 * are opened (or refused) by the layers above.
 * @module masq/peer/relay
 */
import { concat, hex, unhex } from "./bytes.js";

const T = { JOIN: 1, LEAVE: 2, SEND: 3, DELIVER: 4, ERROR: 5, PRESENCE: 6 };
export const MAX_QUEUE_FRAMES = 1024;
export const MAX_QUEUE_BYTES = 16 << 20;

export class RelayClient {
  /**
   * @param {string} url - ws:// or wss://
   * @param {Object} handlers
   * @param {(room: string, payload: Uint8Array) => void} handlers.onFrame - room as hex
   * @param {() => void} [handlers.onUp]
   * @param {(why: string) => void} [handlers.onDown]
   * @param {(room: string, members: number) => void} [handlers.onPresence]
   * @param {(code: number, message: string) => void} [handlers.onError] - an ERROR frame
   * @param {(what: string) => void} [handlers.onGarbage] - a frame that is not the protocol
   */
  constructor(url, handlers) {
    if (!/^wss?:\/\//.test(url)) throw new TypeError("a relay URL starts with ws:// or wss://");
    this.url = url;
    this.h = handlers;
    this.rooms = new Set();
    this.queue = [];
    this.queuedBytes = 0;
    this.ws = null;
    this.up = false;
    this.closed = false;
    this.backoff = 250;
    this.stats = { sent: 0, received: 0, malformed: 0, errors: 0, reconnects: 0 };
    this._open();
  }

  _open() {
    if (this.closed) return;
    let ws;
    try {
      ws = new WebSocket(this._path());
    } catch (e) {
      this._retry(String(e && e.message));
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.up = true;
      this.backoff = 250;
      for (const room of this.rooms) this._write(frame(T.JOIN, unhex(room)));
      const q = this.queue.splice(0);
      this.queuedBytes = 0;
      for (const f of q) this._write(f);
      if (this.h.onUp) this.h.onUp();
    };
    ws.onmessage = (m) => this._onMessage(m.data);
    ws.onclose = (e) => {
      const was = this.up;
      this.up = false;
      this.ws = null;
      if (was && this.h.onDown) this.h.onDown(`closed (${e.code})`);
      this._retry(`closed (${e.code})`);
    };
    ws.onerror = () => {};
  }

  _retry(why) {
    if (this.closed) return;
    this.stats.reconnects++;
    const wait = this.backoff / 2 + Math.random() * (this.backoff / 2);
    this.backoff = Math.min(this.backoff * 2, 5000);
    if (!this.up && this.h.onDown && this.stats.reconnects === 1) this.h.onDown(why);
    this._timer = setTimeout(() => this._open(), wait);
  }

  _onMessage(data) {
    if (!(data instanceof ArrayBuffer)) return this._garbage("a text frame");
    const b = new Uint8Array(data);
    if (b.length < 2 || b[0] !== 1) return this._garbage("an unknown version or a truncated frame");
    this.stats.received++;
    switch (b[1]) {
      case T.DELIVER: {
        const n = b[2];
        if (b.length < 3 || n < 1 || n > 64 || b.length < 3 + n) return this._garbage("a truncated DELIVER");
        this.h.onFrame(hex(b.subarray(3, 3 + n)), b.slice(3 + n));
        return;
      }
      case T.PRESENCE: {
        const n = b[2];
        if (b.length !== 3 + n + 4) return this._garbage("a malformed PRESENCE");
        const members = new DataView(b.buffer, b.byteOffset + 3 + n).getUint32(0);
        if (this.h.onPresence) this.h.onPresence(hex(b.subarray(3, 3 + n)), members);
        return;
      }
      case T.ERROR: {
        if (b.length < 4) return this._garbage("a truncated ERROR");
        this.stats.errors++;
        const code = (b[2] << 8) | b[3];
        if (this.h.onError) this.h.onError(code, new TextDecoder().decode(b.subarray(4)));
        return;
      }
      default:
        return this._garbage(`frame type ${b[1]}`);
    }
  }

  _garbage(what) {
    this.stats.malformed++;
    if (this.h.onGarbage) this.h.onGarbage(what);
  }

  _write(f) {
    this.stats.sent++;
    this.ws.send(f);
  }

  /** The URL with `/r/<room hex>` while exactly one room is joined: a load
   *  balancer in front of a relay fleet hashes that path, so every device of
   *  a group meets on the same relay (docs/OPERATIONS.md; as the Swift client). */
  _path() {
    if (this.rooms.size !== 1) return this.url;
    const [base, query] = this.url.split("?", 2);
    const u = new URL(base);
    u.pathname = u.pathname.replace(/\/+$/, "") + "/r/" + [...this.rooms][0];
    return u.toString() + (query !== undefined ? "?" + query : "");
  }

  /** @param {string} room - the room's bytes as hex (1–64 bytes; Masq's are 16) */
  join(room) {
    const first = this.rooms.size === 0 && !this.rooms.has(room);
    this.rooms.add(room);
    if (first && this.ws) {
      // Reconnect on the room's path (behind a fleet, the group's relay).
      const old = this.ws;
      this.ws = null;
      this.up = false;
      old.onclose = null;
      old.onmessage = null;
      try { old.close(); } catch (_) { /* closing anyway */ }
      clearTimeout(this._timer);
      this._open();
      return;
    }
    if (this.up) this._write(frame(T.JOIN, unhex(room)));
  }

  leave(room) {
    if (this.rooms.delete(room) && this.up) this._write(frame(T.LEAVE, unhex(room)));
  }

  /**
   * Send to every other member of `room`; queued while disconnected.
   * @returns {boolean} false when the queue is full (the caller resends later)
   */
  send(room, payload) {
    const f = frame(T.SEND, unhex(room), payload);
    if (this.up && this.ws.bufferedAmount < MAX_QUEUE_BYTES) {
      this._write(f);
      return true;
    }
    if (this.queue.length >= MAX_QUEUE_FRAMES || this.queuedBytes + f.length > MAX_QUEUE_BYTES) return false;
    this.queue.push(f);
    this.queuedBytes += f.length;
    return true;
  }

  close() {
    this.closed = true;
    clearTimeout(this._timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.up = false;
  }
}

function frame(type, r, payload = new Uint8Array(0)) {
  if (r.length < 1 || r.length > 64) throw new TypeError("a room is 1 to 64 bytes");
  return concat([1, type, r.length], r, payload);
}

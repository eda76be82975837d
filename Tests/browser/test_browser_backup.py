"""Backups from the manager page, in a real browser (Chromium through
Selenium): the user types a passphrase and clicks "Download a backup", the
browser saves the file (which the CLI verifies); with "use a recovery key"
the page shows the key once; choosing the downloaded file, a new profile
name and the passphrase, "Restore as a new profile" brings the profile back
with its data. Screenshots go to Tests/browser/build/.

Run: MASQD=.build/debug/masqd MASQ_BIN=.build/debug/masq-cli python3 -m pytest Tests/browser
"""
import os
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
from test_browser import ARTIFACTS, MASQ, Masqd, click  # noqa: E402


def downloaded(directory):
    files = [f for f in os.listdir(directory) if f.endswith(".masqbackup")]
    return files[0] if files and not any(f.endswith(".crdownload") for f in os.listdir(directory)) else None


def test_download_a_backup_and_restore_it_as_a_new_profile(tmp_path):
    if not shutil.which("chromedriver") or not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("apt-get install chromium chromium-driver")
    masqd = Masqd(tmp_path / "home")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = Options()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600",
                f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        # Some data in the default profile, written by an approved native app.
        manager = DaemonClient.manager(url=masqd.url.replace("http:", "ws:"), secret=masqd.secret)
        app = DaemonClient(masqd.url.replace("http:", "ws:"), app_id="com.example.notes")
        app.register("Notes", description="test app")
        manager.call("apps.approve", app="native:com.example.notes")
        assert app._approved.wait(5)
        app.put("note", "comes back from the backup")

        driver.get(f"{masqd.url}#admin={masqd.secret}")
        WebDriverWait(driver, 20).until(lambda d: "connected" in d.find_element(By.ID, "connection").text)
        driver.find_element(By.ID, "backup-passphrase").send_keys("page pw")
        click(driver, "#backup-form button[type=submit]")
        name = WebDriverWait(driver, 30).until(lambda d: downloaded(downloads))
        assert "Backup saved" in driver.find_element(By.ID, "message").text
        assert driver.find_element(By.ID, "backup-key").get_attribute("hidden")
        saved = downloads / name
        check = subprocess.run([MASQ, "restore", "--verify", str(saved)], capture_output=True, text=True,
                               env={**os.environ, "MASQ_BACKUP_PASSPHRASE": "page pw"})
        assert check.returncode == 0, check.stderr

        # With a recovery key: shown once on the page.
        os.rename(saved, tmp_path / name)
        driver.find_element(By.ID, "backup-recovery").click()
        click(driver, "#backup-form button[type=submit]")
        key = WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "backup-key-text").text)
        assert len(key) == 69 and not driver.find_element(By.ID, "backup-key").get_attribute("hidden")
        driver.save_screenshot(os.path.join(ARTIFACTS, "manager-backup.png"))

        # Restore the first one as a new profile.
        driver.find_element(By.ID, "restore-file").send_keys(str(tmp_path / name))
        driver.find_element(By.ID, "restore-profile").send_keys("restored")
        driver.find_element(By.ID, "restore-secret").send_keys("page pw")
        click(driver, "#restore-form button[type=submit]")
        WebDriverWait(driver, 30).until(lambda d: "Restored as profile restored" in d.find_element(By.ID, "message").text)
        WebDriverWait(driver, 10).until(lambda d: "restored" in d.find_element(By.ID, "profile-list").text)
        driver.save_screenshot(os.path.join(ARTIFACTS, "manager-restored.png"))
        entries = manager.call("data.list", profile="restored", ns="native:com.example.notes")["entries"]
        assert entries == [{"key": "note", "value": "comes back from the backup"}]
        time.sleep(0.2)
    finally:
        driver.quit()
        masqd.stop()

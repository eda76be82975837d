"""Sharing a namespace with another person through the Python binding: two
stores in this process share through a real Connectoid service on 127.0.0.1
(`masq connectoid serve`, MASQ_BIN) — read-only and merged shares, nicknames,
the same fingerprint on both sides, unshare — and every bad input is refused
with its error and stores nothing."""

import os
import re
import subprocess
import time

import pytest

import masq


def wait_until(predicate, seconds=30.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.fixture
def service_url(tmp_path):
    binary = os.environ.get("MASQ_BIN")
    if not binary:
        pytest.skip("MASQ_BIN (the masq CLI) not set")
    proc = subprocess.Popen([binary, "connectoid", "serve", "--port", "0", "--db", str(tmp_path / "service.sqlite3")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = ""
        deadline = time.time() + 10
        while "http://" not in line and time.time() < deadline:
            line = proc.stdout.readline()
        yield re.search(r"http://\S+", line).group(0)
    finally:
        proc.terminate()
        proc.wait(5)


def open_sharing(path, url):
    return masq.Store.open_config({
        "data_dir": str(path), "security": {"scrypt_log_n": 10},
        "sharing": {"services": [url], "resend_ms": 1000,
                    "transport": {"plugin": "connectoid", "options": {"interval_ms": "100", "timeout_ms": "3000"}}},
    })


PAIRING_LINK = "masq://pair/0123456789abcdef?via=ws://127.0.0.1:1/#c2VjcmV0c2VjcmV0c2VjcmV0"


def test_bad_input_is_refused_and_stores_nothing(store, tmp_path):
    # No service in the config.
    with pytest.raises(masq.ConfigError, match="service"):
        store.share("notes", nickname="Bob")
    assert store.shares() == []
    with pytest.raises(TypeError):
        store.share("notes", nickname=42)
    with pytest.raises(masq.InvalidArgumentError):
        store.share("notes", nickname=None)
    for bad in ["", "x" * 65, "tab\there", "Bob \u202e"]:
        with pytest.raises(masq.InvalidArgumentError):
            store.share("notes", nickname=bad)
    for link in ["", "not a link", PAIRING_LINK, "https://app.example/?connectoid=AAAA.aHR0cDovL3g.#AAAA"]:
        with pytest.raises(masq.InvalidArgumentError):
            store.accept_share(link, nickname="Alice")
    with pytest.raises(masq.InvalidArgumentError):
        store.accept_share(None, nickname="Alice")
    for call in (lambda: store.share_info("nope"), lambda: store.unshare("nope"),
                 lambda: store.set_share_nickname("nope", "Carol")):
        with pytest.raises(masq.NotFoundError):
            call()
    with pytest.raises(masq.InvalidArgumentError):
        store.share_info("")
    with pytest.raises(masq.InvalidArgumentError):
        store.share_sync_once(0)
    assert store.shares() == []


def test_links_are_checked_before_anything_is_stored(service_url, tmp_path):
    with open_sharing(tmp_path / "a", service_url) as alice, open_sharing(tmp_path / "b", service_url) as bob:
        share = alice.share("notes", nickname="Bob", base_url="https://notes.example/join")
        assert share.link.startswith("https://notes.example/join?connectoid=") and "#" in share.link
        assert (share.status, share.role, share.nickname, share.fingerprint) == ("offered", "owner", "Bob", None)
        assert masq.qr_pgm(share.link).startswith(b"P5")
        with pytest.raises(masq.InvalidArgumentError, match="own"):
            alice.accept_share(share.link, nickname="me")
        with pytest.raises(masq.InvalidArgumentError, match="secret"):
            bob.accept_share(share.link.split("#")[0], nickname="Alice")
        bob.put("taken", "k", "v")
        with pytest.raises(masq.InvalidArgumentError, match="already exists"):
            bob.accept_share(share.link, nickname="Alice", as_namespace="taken")
        with pytest.raises(masq.InvalidArgumentError):
            bob.accept_share(share.link, nickname="Alice", merge=True)
        assert bob.shares() == []
        accepted = bob.accept_share(share.link, nickname="Alice")
        assert (accepted.id, accepted.status, accepted.namespace) == (share.id, "claimed", None)
        with pytest.raises(masq.DeniedError, match="already accepted"):
            bob.accept_share(share.link, nickname="Alice")
        assert [s.id for s in bob.shares()] == [share.id]
        bob.set_share_nickname(share.id, "Alice B.")
        assert bob.share_info(share.id).nickname == "Alice B."
        with pytest.raises(masq.InvalidArgumentError):
            bob.set_share_nickname(share.id, "")
        assert bob.share_info(share.id).nickname == "Alice B."


def test_read_only_share_between_two_stores(service_url, tmp_path):
    with open_sharing(tmp_path / "a", service_url) as alice, open_sharing(tmp_path / "b", service_url) as bob:
        alice.put("docs", "readme", "v1")
        alice.put("private", "secret", "not shared")
        link = alice.share("docs", nickname="Bob", read_only=True).link
        share = bob.accept_share(link, nickname="Alice", as_namespace="alice-docs")
        alice.share_sync_start()
        bob.share_sync_start()
        with pytest.raises(masq.BusyError):
            bob.share_sync_start()
        assert wait_until(lambda: bob.share_info(share.id).status == "active"
                          and alice.share_info(share.id).status == "active")
        a, b = alice.share_info(share.id), bob.share_info(share.id)
        assert a.fingerprint and a.fingerprint == b.fingerprint and re.fullmatch(r"(\d{5} ){5}\d{5}", a.fingerprint)
        assert a.fingerprint_emoji and a.fingerprint_emoji == b.fingerprint_emoji
        assert (a.role, a.nickname, b.role, b.nickname) == ("owner", "Bob", "guest", "Alice")
        assert (b.namespace, b.access) == ("alice-docs", "read-only")
        assert wait_until(lambda: bob.get("alice-docs", "readme") == b"v1")
        with pytest.raises(masq.DeniedError, match="read-only"):
            bob.put("alice-docs", "readme", "changed by bob")
        alice.put("docs", "readme", "v2")
        assert wait_until(lambda: bob.get("alice-docs", "readme") == b"v2")
        assert bob.get("private", "secret") is None

        # Alice ends it: Bob hears, both keep their data, nothing flows afterwards.
        alice.unshare(share.id)
        assert wait_until(lambda: bob.shares() == [])
        with pytest.raises(masq.NotFoundError):
            alice.unshare(share.id)
        alice.put("docs", "readme", "v3")
        time.sleep(1)
        assert bob.get("alice-docs", "readme") == b"v2"
        bob.put("alice-docs", "readme", "mine now")     # an ordinary namespace again
        alice.share_sync_stop()
        bob.share_sync_stop()


def test_merged_share_sends_both_sides_keys(service_url, tmp_path):
    with open_sharing(tmp_path / "a", service_url) as alice, open_sharing(tmp_path / "b", service_url) as bob:
        alice.put("list", "from-alice", "a")
        bob.put("mine", "from-bob", "b")
        link = alice.share("list", nickname="Bob").link
        bob.accept_share(link, nickname="Alice", as_namespace="mine", merge=True)
        bob.share_sync_start()
        alice.share_sync_once(30)
        assert wait_until(lambda: alice.get("list", "from-bob") == b"b" and bob.get("mine", "from-alice") == b"a")

"""Sharing with other people through masqd's app protocol, with real daemons
and a real Connectoid service on 127.0.0.1: an app asks to share its own
namespace, the user approves that request in the manager, the app gets the
link and a QR code; the other person's app asks to accept the link, their
user approves it; both apps follow the share (same fingerprint, digits and
emoji; each side's nickname for the other), read and write the namespace,
and one ends it. Every bad request — an unapproved app, another app's
namespace, a malformed or foreign link, a second accept of one link, an
unknown share, a request whose app has gone, a denial — is answered with a
clear code and changes nothing.

Run: MASQD=.build/debug/masqd MASQ_BIN=.build/debug/masq-cli python3 -m pytest Tests/daemon
"""
import json
import os
import re
import subprocess
import time

import pytest

pytest.importorskip("websockets", reason="pip install websockets")

from masq.daemon import DaemonClient, DaemonError  # noqa: E402
from test_masqd import MASQ, Daemon, approved_app  # noqa: E402

PAIRING_LINK = "masq://pair/0123456789abcdef?via=ws://127.0.0.1:1/#c2VjcmV0c2VjcmV0c2VjcmV0"


def wait_until(predicate, seconds=30.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def fails(code, call, *args, **kwargs):
    with pytest.raises(DaemonError) as e:
        call(*args, **kwargs)
    assert e.value.code == code, e.value
    assert e.value.message
    return e.value.message


@pytest.fixture
def service_url(tmp_path):
    proc = subprocess.Popen([MASQ, "connectoid", "serve", "--port", "0", "--db", str(tmp_path / "service.sqlite3")],
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


def sharing_home(home, services=()):
    """A masqd home whose default profile polls share mailboxes every 100 ms."""
    profile = home / "profiles" / "default"
    profile.mkdir(parents=True)
    config = {"masq": 1, "data_dir": str(profile / "data"), "storage": {"plugin": "sqlite"},
              "sharing": {"services": list(services), "resend_ms": 1000,
                          "transport": {"plugin": "connectoid", "options": {"interval_ms": "100", "timeout_ms": "3000"}}}}
    (profile / "config.json").write_text(json.dumps(config))
    return home


@pytest.fixture
def world(tmp_path, service_url):
    # Alice's daemon names the service on its command line, Bob's profile in its config.
    alice = Daemon(sharing_home(tmp_path / "alice"), "--share-service", service_url)
    bob = Daemon(sharing_home(tmp_path / "bob", [service_url]))
    yield alice, bob, service_url
    alice.stop()
    bob.stop()


def test_share_and_accept_with_the_users_consent(world):
    alice, bob, service_url = world
    alice_manager, bob_manager = alice.manager(), bob.manager()
    notes = approved_app(alice, alice_manager, "com.example.notes", name="Notes")
    notes.put("hello", "from alice")
    alice_events, bob_events = [], []
    notes.on_share = alice_events.append

    # 1. Alice's app asks; nothing exists until her user approves that request.
    asked = notes.share("Bob", wait=False)
    assert asked["state"] == "pending" and asked["request"]
    listed = alice_manager.call("shares.list")
    assert listed["shares"] == []
    [request] = listed["requests"]
    assert (request["request"], request["kind"], request["app"], request["app_name"], request["nickname"],
            request["namespace"], request["access"]) == (asked["request"], "create", "native:com.example.notes", "Notes",
                                                         "Bob", "native:com.example.notes", "read-write")
    approved = alice_manager.call("shares.approve", request=asked["request"])
    answer = notes.wait_share(asked["request"], timeout=10)
    link = answer["link"]
    assert link.startswith("masq://share/?connectoid=") and "#" in link
    assert answer["qr_svg"].startswith("<svg") and "<path" in answer["qr_svg"]
    share = answer["share"]
    assert share == approved["share"]
    assert (share["status"], share["role"], share["nickname"], share["namespace"], share["fingerprint"]) == \
        ("offered", "owner", "Bob", "native:com.example.notes", None)
    assert alice_manager.call("shares.list")["requests"] == []
    assert [s["id"] for s in notes.shares()] == [share["id"]]
    fails("not_found", alice_manager.call, "shares.approve", request=asked["request"])   # answered once

    # 2. Bob's app asks to accept it; his user approves.
    reader = approved_app(bob, bob_manager, "com.example.notes", name="Notes")
    reader.on_share = bob_events.append
    asked_b = reader.accept_share(link, "Alice", wait=False)
    [request_b] = bob_manager.call("shares.list")["requests"]
    assert (request_b["kind"], request_b["nickname"], request_b["share"], request_b["services"]) == \
        ("accept", "Alice", share["id"], [service_url])
    bob_manager.call("shares.approve", request=asked_b["request"])
    accepted = reader.wait_share(asked_b["request"], timeout=10)["share"]
    assert (accepted["id"], accepted["status"], accepted["role"], accepted["nickname"]) == (share["id"], "claimed", "guest", "Alice")
    # A second accept of the same link is refused at once, without asking anyone.
    assert "already accepted" in fails("denied", reader.accept_share, link, "Alice")
    assert bob_manager.call("shares.list")["requests"] == []

    # 3. Both apps hear that the share is active; the fingerprints match.
    assert wait_until(lambda: any(s["status"] == "active" for s in alice_events)
                      and any(s["status"] == "active" and s["namespace"] for s in bob_events))
    mine, theirs = notes.shares()[0], reader.shares()[0]
    assert mine["fingerprint"] and mine["fingerprint"] == theirs["fingerprint"]
    assert re.fullmatch(r"(\d{5} ){5}\d{5}", mine["fingerprint"])
    assert mine["fingerprint_emoji"] and mine["fingerprint_emoji"] == theirs["fingerprint_emoji"]
    ns = theirs["namespace"]
    assert ns.startswith("shared:native:com.example.notes:") and theirs["access"] == "read-write"

    # 4. Data flows both ways; another app on Bob's side sees nothing of it.
    assert wait_until(lambda: reader.get("hello", ns=ns) == "from alice")
    reader.put("from-bob", "hi alice", ns=ns)
    assert wait_until(lambda: notes.get("from-bob") == "hi alice")
    other = approved_app(bob, bob_manager, "com.example.other", name="Other")
    fails("denied", other.get, "hello", ns=ns)
    assert other.shares() == []
    fails("not_found", other.unshare, share["id"])
    # Bob's manager shows who it is with and which app holds it.
    [row] = bob_manager.call("shares.list")["shares"]
    assert (row["app"], row["app_name"], row["nickname"], row["fingerprint"]) == \
        ("native:com.example.notes", "Notes", "Alice", mine["fingerprint"])

    # 5. Bob's app ends it: Alice's app hears "ended"; Bob's app keeps the data.
    reader.unshare(share["id"])
    assert reader.shares() == []
    assert wait_until(lambda: any(s["status"] == "ended" and s["id"] == share["id"] for s in alice_events))
    assert notes.shares() == []
    assert reader.get("hello", ns=ns) == "from alice"
    reader.put("after", "mine now", ns=ns)
    fails("not_found", reader.unshare, share["id"])
    assert alice.alive() and bob.alive()


def test_bad_share_requests_are_refused_and_change_nothing(world):
    alice, bob, _ = world
    manager = alice.manager()
    notes = approved_app(alice, manager, "com.example.notes", name="Notes")
    page = approved_app(alice, manager, origin="http://localhost:8000", name="Page")

    # Not approved: nothing.
    stranger = DaemonClient(alice.url, app_id="com.example.stranger")
    stranger.hello()
    fails("unauthorized", stranger.call, "share.create", nickname="Bob")
    fails("unauthorized", stranger.call, "share.accept", link="x", nickname="Bob")
    fails("unauthorized", stranger.call, "share.list")
    fails("unauthorized", notes.call, "shares.list")        # the manager's ops are not an app's

    # Another app's namespace, even one granted to it.
    manager.call("apps.grant", app="native:com.example.notes", target="web:http://localhost:8000", access="write")
    assert "own namespace" in fails("denied", notes.share, "Bob", ns="web:http://localhost:8000", wait=False)
    fails("bad_request", notes.call, "share.create")
    fails("invalid", notes.share, "", wait=False)
    fails("invalid", notes.share, "x" * 65, wait=False)
    fails("invalid", notes.share, "line\nbreak", wait=False)
    fails("denied", page.share, "Bob", base="https://evil.example/", wait=False)
    fails("invalid", notes.share, "Bob", base="https://app.example/#x", wait=False)

    # Links: missing, malformed, foreign, without the secret, this profile's own.
    fails("bad_request", notes.call, "share.accept", nickname="Alice")
    fails("bad_request", notes.call, "share.accept", link="masq://share/x")
    for bad in ["not a link", PAIRING_LINK, "https://app.example/?connectoid=AAAA.aHR0cDovL3g.#AAAA"]:
        assert "not a share link" in fails("invalid", notes.accept_share, bad, "Alice", wait=False)
    asked = notes.share("Bob", wait=False)
    manager.call("shares.approve", request=asked["request"])
    link = notes.wait_share(asked["request"], timeout=10)["link"]
    assert "secret" in fails("invalid", page.accept_share, link.split("#")[0], "Alice", wait=False)
    assert "own share link" in fails("invalid", page.accept_share, link, "Alice", wait=False)
    assert manager.call("shares.list")["requests"] == []

    # The user says no: the app hears it, nothing is made.
    asked = page.share("Bob", wait=False)
    manager.call("shares.deny", request=asked["request"])
    assert "refused" in fails("denied", page.wait_share, asked["request"], 10)
    assert page.shares() == [] and len(manager.call("shares.list")["shares"]) == 1

    # A request goes away with its connection; a gone app's request cannot be approved.
    leaving = DaemonClient(alice.url, app_id="com.example.notes", token=notes.token)
    leaving.hello()
    asked = leaving.share("Carol", wait=False)
    assert [q["request"] for q in manager.call("shares.list")["requests"]] == [asked["request"]]
    leaving.close()
    assert wait_until(lambda: manager.call("shares.list")["requests"] == [], 10)
    fails("not_found", manager.call, "shares.approve", request=asked["request"])
    fails("not_found", manager.call, "shares.deny", request="nope")
    fails("bad_request", manager.call, "shares.remove")

    # Unknown shares; another app's share.
    fails("not_found", notes.unshare, "nope")
    fails("bad_request", notes.call, "share.remove")
    [mine] = notes.shares()
    fails("not_found", page.unshare, mine["id"])
    fails("not_found", manager.call, "shares.remove", share="nope")
    assert [s["id"] for s in notes.shares()] == [mine["id"]]

    # Requests waiting for the user are bounded per connection.
    for i in range(4):
        page.share(f"Friend {i}", wait=False)
    fails("busy", page.share, "One too many", wait=False)

    # The user can end any share from the manager; the app hears it.
    events = []
    notes.on_share = events.append
    manager.call("shares.remove", share=mine["id"])
    assert wait_until(lambda: any(s["status"] == "ended" for s in events), 10)
    assert notes.shares() == []
    assert alice.alive()


def test_no_service_is_a_clear_error(tmp_path):
    daemon = Daemon(tmp_path / "home")
    try:
        manager = daemon.manager()
        notes = approved_app(daemon, manager, "com.example.notes", name="Notes")
        assert "service" in fails("unavailable", notes.share, "Bob", wait=False)
        assert manager.call("shares.list") == {"profile": "default", "shares": [], "requests": []}
    finally:
        daemon.stop()

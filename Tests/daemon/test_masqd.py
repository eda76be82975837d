"""masqd against real clients on 127.0.0.1: app consent and tokens, origins,
grants, watch (including changes that arrive by sync from another device),
revocation, profiles, the manager's protection, `masq apps`, static pages,
and bad input of every kind — the daemon answers each with an error and
stays up; no request of an unapproved app touches data.

Run: MASQD=.build/debug/masqd MASQ_BIN=.build/debug/masq-cli python3 -m pytest Tests/daemon
(needs `pip install ./bindings/python websockets`)
"""
import http.client
import json
import os
import re
import socket
import subprocess
import time

import pytest

websockets = pytest.importorskip("websockets", reason="pip install websockets")
from websockets.sync.client import connect  # noqa: E402

from masq.daemon import DaemonClient, DaemonError  # noqa: E402

MASQD = os.environ.get("MASQD", ".build/debug/masqd")
MASQ = os.environ.get("MASQ_BIN", ".build/debug/masq-cli")


class Daemon:
    def __init__(self, home, *extra):
        self.home = str(home)
        self.proc = subprocess.Popen([MASQD, "--home", self.home, "--listen", "127.0.0.1:0", "--rate", "200",
                                      "--max-message-bytes", "65536", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"http://[^ ]+:(\d+)/", line)
        assert match, f"masqd did not start: {line} {self.proc.stderr.read() if self.proc.poll() is not None else ''}"
        self.port = int(match.group(1))
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.secret = json.load(open(os.path.join(self.home, "masqd.json")))["admin_secret"]

    def manager(self):
        return DaemonClient.manager(url=self.url, secret=self.secret)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path / "home")
    yield d
    d.stop()
    assert not os.path.exists(os.path.join(d.home, "masqd.json")), "the runtime file outlived the daemon"


def approved_app(daemon, manager, app_id="com.example.notes", origin=None, name="Notes"):
    app = DaemonClient(daemon.url, app_id=None if origin else app_id, origin=origin)
    app.register(name, description="test app")
    app_key = f"web:{origin}" if origin else f"native:{app_id}"
    manager.call("apps.approve", app=app_key)
    assert app._approved.wait(5), "no approval event"
    return app


def test_consent_flow_and_tokens(daemon):
    app = DaemonClient(daemon.url, app_id="com.example.notes")
    assert app.hello()["state"] == "unregistered"
    with pytest.raises(DaemonError) as e:
        app.put("k", "v")
    assert e.value.code == "unauthorized"
    assert app.register("Notes", "my notes") is None and app.state == "pending"
    with pytest.raises(DaemonError) as e:
        app.get("k")
    assert e.value.code == "unauthorized"

    manager = daemon.manager()
    listed = manager.call("apps.list")["apps"]
    assert [(a["id"], a["state"], a["name"]) for a in listed] == [("native:com.example.notes", "pending", "Notes")]
    manager.call("apps.approve", app="native:com.example.notes")
    assert app._approved.wait(5) and app.token and app.namespace == "native:com.example.notes"
    app.put("greeting", "hello")
    assert app.get("greeting") == "hello"
    assert app.get("absent") is None

    # Next time: the token alone is enough; a wrong token is not.
    again = DaemonClient(daemon.url, app_id="com.example.notes", token=app.token)
    assert again.hello()["state"] == "approved" and again.get("greeting") == "hello"
    forged = DaemonClient(daemon.url, app_id="com.example.notes", token="A" * 43)
    assert forged.hello()["state"] == "bad_token"
    with pytest.raises(DaemonError) as e:
        forged.get("greeting")
    assert e.value.code == "unauthorized"
    # The token is stored only as a hash.
    registry = open(os.path.join(daemon.home, "profiles", "default", "apps.json")).read()
    assert app.token not in registry


def test_operations(daemon):
    manager = daemon.manager()
    app = approved_app(daemon, manager)
    app.set_all({"a/1": "one", "a/2": "two", "b/1": "three"})
    assert [e["key"] for e in app.list("a/")["entries"]] == ["a/1", "a/2"]
    assert app.list("", limit=2)["more"] is True
    assert app.list("a/", keys_only=True)["entries"] == [{"key": "a/1"}, {"key": "a/2"}]
    app.delete("a/1")
    assert app.get_all() == {"a/2": "two", "b/1": "three"}
    app.set_all({"a/2": None, "c": "x"})
    assert app.get_all() == {"b/1": "three", "c": "x"}
    app.set_all({"only": "this"}, replace=True)
    assert app.get_all() == {"only": "this"}
    app.put("bin", bytes(range(256)))
    assert app.get("bin", binary=True) == bytes(range(256))
    assert app.get("bin") == bytes(range(256))          # not UTF-8: it comes back as base64, not mangled
    app.clear()
    assert app.get_all() == {}
    app.counter_add("likes", 5)
    app.counter_add("likes", -2)
    assert app.counter("likes") == 3
    with pytest.raises(DaemonError) as e:
        app.call("put", key="k")
    assert e.value.code == "bad_request" and "value" in e.value.message


def test_web_origin_binding_and_spoofing(daemon):
    manager = daemon.manager()
    page = approved_app(daemon, manager, origin="http://localhost:8000")
    assert page.namespace == "web:http://localhost:8000"
    page.put("secret", "only mine")

    # The token is bound to the origin: another origin presenting it is not that app.
    thief = DaemonClient(daemon.url, origin="http://evil.example", token=page.token)
    assert thief.hello()["state"] == "unregistered"
    with pytest.raises(DaemonError) as e:
        thief.get("secret", ns="web:http://localhost:8000")
    assert e.value.code == "unauthorized"
    # It may ask to be approved under its own origin, even with the same name...
    thief.register("Notes")
    apps = {a["id"]: a for a in manager.call("apps.list")["apps"]}
    assert apps["web:http://evil.example"]["state"] == "pending" and apps["web:http://evil.example"]["name"] == "Notes"
    # ...and once approved it still sees nothing of the other app.
    manager.call("apps.approve", app="web:http://evil.example")
    assert thief._approved.wait(5)
    with pytest.raises(DaemonError) as e:
        thief.get("secret", ns="web:http://localhost:8000")
    assert e.value.code == "denied"
    # Registering an approved identity without its token is only a request
    # for one more instance: it gets nothing unless the user approves it, and
    # the approved instance keeps working.
    imposter = DaemonClient(daemon.url, origin="http://localhost:8000")
    assert imposter.register("Notes") is None and imposter.state == "pending"
    listed = {a["id"]: a for a in manager.call("apps.list")["apps"]}["web:http://localhost:8000"]
    assert listed["state"] == "approved" and [q["request"] for q in listed["requests"]] == [imposter.request]
    with pytest.raises(DaemonError) as e:
        imposter.get("secret")
    assert e.value.code == "unauthorized"
    manager.call("apps.deny", app="web:http://localhost:8000", request=imposter.request)
    assert imposter.wait_closed(5)
    assert page.get("secret") == "only mine"
    # The manager's own origin is not an app, and cannot use the admin API from elsewhere.
    own = DaemonClient(daemon.url, origin=f"http://127.0.0.1:{daemon.port}")
    with pytest.raises(DaemonError) as e:
        own.register("sneaky")
    assert e.value.code == "denied"
    foreign_admin = DaemonClient(daemon.url, origin="http://localhost:8000")
    with pytest.raises(DaemonError) as e:
        foreign_admin.call("admin", secret=daemon.secret)
    assert e.value.code == "denied"
    with pytest.raises(DaemonError) as e:
        DaemonClient(daemon.url).call("admin", secret="wrong")
    assert e.value.code == "unauthorized"
    with pytest.raises(DaemonError) as e:
        page.call("apps.list")
    assert e.value.code == "unauthorized"


def test_grants_and_watch_across_apps(daemon):
    manager = daemon.manager()
    notes = approved_app(daemon, manager, "com.example.notes", name="Notes")
    reader = approved_app(daemon, manager, "com.example.reader", name="Reader")
    events = []
    notes.watch(events.append, prefix="doc/")
    with pytest.raises(DaemonError) as e:
        reader.get("doc/1", ns="native:com.example.notes")
    assert e.value.code == "denied"
    manager.call("apps.grant", app="native:com.example.reader", target="native:com.example.notes", access="read")
    notes.put("doc/1", "first")
    assert reader.get("doc/1", ns="native:com.example.notes") == "first"
    with pytest.raises(DaemonError) as e:
        reader.put("doc/2", "nope", ns="native:com.example.notes")
    assert e.value.code == "denied"
    manager.call("apps.grant", app="native:com.example.reader", target="native:com.example.notes", access="write")
    reader.put("doc/2", "written by reader", ns="native:com.example.notes")
    deadline = time.time() + 5
    while len(events) < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert [(e["key"], e["value"], e["kind"]) for e in events] == [("doc/1", "first", "put"), ("doc/2", "written by reader", "put")]
    assert "grant: native:com.example.reader may read and write native:com.example.notes" in \
        subprocess.run([MASQ, "apps", "--home", daemon.home], capture_output=True, text=True, check=True).stdout
    manager.call("apps.ungrant", app="native:com.example.reader", target="native:com.example.notes")
    with pytest.raises(DaemonError):
        reader.get("doc/1", ns="native:com.example.notes")


def test_revocation_cuts_an_open_app_off(daemon):
    manager = daemon.manager()
    app = approved_app(daemon, manager)
    app.put("k", "v")
    out = subprocess.run([MASQ, "apps", "revoke", "native:com.example.notes", "--home", daemon.home],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert app.wait_closed(5) and app.state == "revoked"
    back = DaemonClient(daemon.url, app_id="com.example.notes", token=app.token or "x")
    assert back.hello()["state"] == "revoked"
    # Asking again puts it back in the queue; the data stayed.
    back.register("Notes")
    assert subprocess.run([MASQ, "apps", "approve", "native:com.example.notes", "--home", daemon.home],
                          capture_output=True, text=True).returncode == 0
    assert back._approved.wait(5) and back.get("k") == "v"
    listing = subprocess.run([MASQ, "apps", "list", "--home", daemon.home], capture_output=True, text=True).stdout
    assert "approved  native:com.example.notes" in listing


def test_profiles_are_separate_and_lockable(daemon):
    manager = daemon.manager()
    app = approved_app(daemon, manager)
    app.put("k", "default profile")
    manager.call("profiles.create", profile="alice", passphrase="correct horse")
    manager.call("profiles.switch", profile="alice")
    assert app.wait_closed(5)                       # apps say hello again after a switch
    again = DaemonClient(daemon.url, app_id="com.example.notes", token=app.token)
    assert again.hello()["state"] == "unregistered"  # alice never approved it
    alice_app = approved_app(daemon, manager)
    assert alice_app.get("k") is None
    alice_app.put("k", "alice's")
    manager.call("profiles.lock", profile="alice")
    assert alice_app.wait_closed(5)
    locked = DaemonClient(daemon.url, app_id="com.example.notes", token=alice_app.token)
    assert locked.hello()["state"] == "approved"
    with pytest.raises(DaemonError) as e:
        locked.get("k")
    assert e.value.code == "locked"
    with pytest.raises(DaemonError):
        manager.call("profiles.unlock", profile="alice", passphrase="wrong")
    manager.call("profiles.unlock", profile="alice", passphrase="correct horse")
    assert locked.get("k") == "alice's"
    # Nothing of alice's data is stored in the clear.
    for root, _, files in os.walk(os.path.join(daemon.home, "profiles", "alice", "data")):
        for name in files:
            assert b"alice's" not in open(os.path.join(root, name), "rb").read()
    manager.call("profiles.switch", profile="default")
    first = DaemonClient(daemon.url, app_id="com.example.notes", token=app.token)
    assert first.hello()["state"] == "approved" and first.get("k") == "default profile"
    status = manager.call("profiles.list")
    assert {p["name"]: (p["protected"], p["active"]) for p in status["profiles"]} == {"alice": (True, False), "default": (False, True)}


def test_a_change_synced_from_another_device_reaches_a_watching_app(daemon, tmp_path):
    relay = subprocess.Popen([MASQ, "relay", "--port", "0", "--log-level", "error"], stdout=subprocess.PIPE, text=True)
    try:
        relay_url = re.search(r"ws://\S+", relay.stdout.readline()).group(0)
        manager = daemon.manager()
        app = approved_app(daemon, manager)
        events = []
        app.watch(events.append)
        offer = manager.call("devices.pair", relay=relay_url)
        assert offer["link"].startswith("masq://pair/") and offer["qr_svg"].startswith("<svg")
        cfg = str(tmp_path / "laptop.json")
        subprocess.run([MASQ, "init", "--config", cfg, "--data-dir", str(tmp_path / "laptop"), "--name", "laptop"],
                       check=True, capture_output=True)
        joined = subprocess.run([MASQ, "join", "--config", cfg, offer["link"]], capture_output=True, text=True, timeout=60)
        assert joined.returncode == 0, joined.stderr
        deadline = time.time() + 10
        while not any(e.get("event") == "paired" for e in manager.events) and time.time() < deadline:
            time.sleep(0.05)
        assert [d["name"] for d in manager.call("devices.list")["paired"]] == ["laptop"]
        subprocess.run([MASQ, "put", "--config", cfg, "native:com.example.notes", "from-laptop", "hi"], check=True)
        done = subprocess.run([MASQ, "sync", "--config", cfg, "--once", "--quiet", "--timeout", "60"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        deadline = time.time() + 15
        while not events and time.time() < deadline:
            time.sleep(0.05)
        assert events and events[0]["key"] == "from-laptop" and events[0]["origin"] == "remote" and events[0]["value"] == "hi"
        assert app.get("from-laptop") == "hi"
        assert manager.call("sync.status")["running"] is True
    finally:
        relay.terminate()
        relay.wait(5)


def raw(daemon, origin=None):
    return connect(daemon.url, origin=origin, max_size=None)


def ask(ws, text):
    ws.send(text)
    while True:
        message = json.loads(ws.recv(timeout=5))
        if "event" not in message:
            return message


def test_bad_input_is_answered_and_the_daemon_stays_up(daemon):
    with raw(daemon) as ws:
        for text, code in [("{not json", "bad_request"), ("[1, 2]", "bad_request"), ("{}", "bad_request"),
                           ('{"op": 5}', "bad_request"), ('{"op": "teleport"}', "unknown_op"),
                           ('{"op": "get", "id": {"x": 1}}', "bad_request"),
                           ("[" * 500 + "]" * 500, "bad_request"),
                           ('{"op": "register", "app_id": "a b"}', "bad_request"),
                           ('{"op": "register", "app_id": "ok", "name": ""}', "bad_request"),
                           ('{"op": "register", "app_id": "ok", "name": "x", "icon": "javascript:alert(1)"}', "bad_request"),
                           ('{"op": "put", "key": "k", "value": "v"}', "unauthorized")]:
            answer = ask(ws, text)
            assert answer["ok"] is False and answer["error"]["code"] == code, (text[:40], answer)
        ws.send(b"\xff\xfe binary garbage")
        assert json.loads(ws.recv(timeout=5))["error"]["code"] == "bad_request"
    # Oversized: the connection is closed (1009), others carry on.
    with raw(daemon) as ws:
        ws.send("x" * 70_000)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
            ws.recv(timeout=5)
        assert e.value.rcvd is None or e.value.rcvd.code == 1009
    # Flood: past the rate limit (200/s, bursts of 400) requests are refused, not
    # queued. Sent as fast as the client can, 128 in flight at most, as masq.js
    # does: more in flight than --max-waiting-requests (256) closes the connection
    # (test_a_client_that_sends_without_reading_is_closed_not_queued_for), whatever the rate.
    with raw(daemon) as ws:
        codes = []
        for start in range(0, 1000, 128):
            batch = range(start, min(start + 128, 1000))
            for i in batch:
                ws.send(json.dumps({"id": i, "op": "ping"}))
            codes += [json.loads(ws.recv(timeout=5)).get("error", {}).get("code") for _ in batch]
        assert codes.count("rate_limited") > 0 and codes.count(None) >= 200
    assert daemon.alive()
    fresh = DaemonClient(daemon.url, app_id="still.works")
    assert fresh.hello()["state"] == "unregistered"
    # Nothing was written by any of it.
    manager = daemon.manager()
    assert manager.call("data.namespaces")["namespaces"] == []


def http_get(daemon, path, host=None):
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=5)
    conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{daemon.port}"})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_pages_and_dns_rebinding(daemon):
    status, headers, body = http_get(daemon, "/")
    assert status == 200 and b"Masq" in body and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    status, headers, body = http_get(daemon, "/masq.js")
    assert status == 200 and b"export async function connect" in body and headers["Access-Control-Allow-Origin"] == "*"
    assert http_get(daemon, "/../../etc/passwd")[0] == 404
    assert http_get(daemon, "/.hidden")[0] == 404
    # A page on another name that resolves to 127.0.0.1 (DNS rebinding) is refused.
    assert http_get(daemon, "/", host=f"evil.example:{daemon.port}")[0] == 403
    assert http_get(daemon, "/", host="127.0.0.1:1")[0] == 403
    with pytest.raises(Exception) as e:
        connect(daemon.url, additional_headers={"Host": f"evil.example:{daemon.port}"}, open_timeout=5)
    assert "403" in str(e.value)


def test_connection_limit(tmp_path):
    d = Daemon(tmp_path / "home", "--max-connections", "3")
    try:
        held = [raw(d) for _ in range(3)]
        with pytest.raises(Exception) as e:
            connect(d.url, open_timeout=5)
        assert "503" in str(e.value)
        held[0].close()
        time.sleep(0.3)
        with raw(d) as ws:
            assert ask(ws, '{"id": 1, "op": "ping"}')["ok"]
        for ws in held[1:]:
            ws.close()
    finally:
        d.stop()


def test_listens_on_loopback_only(tmp_path):
    proc = subprocess.run([MASQD, "--home", str(tmp_path / "h"), "--listen", "0.0.0.0:0"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "loopback" in proc.stderr
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    d = Daemon(tmp_path / "both", "--listen", f"localhost:{port}")
    try:
        # Every listening socket on that port is on a loopback address (/proc/net/tcp{,6}: state 0A = LISTEN).
        loopback = {"0100007F", "00000000000000000000000001000000"}
        found = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            if not os.path.exists(table):
                continue
            for line in open(table).read().splitlines()[1:]:
                fields = line.split()
                address, hexport = fields[1].split(":")
                if fields[3] == "0A" and int(hexport, 16) == port:
                    found.append(address)
        assert found and set(found) <= loopback, found
    finally:
        d.stop()


def test_one_identity_per_connection_for_its_whole_life(daemon):
    """An approved app cannot switch to another identity on its connection
    (the consent bypass of issue 14), and revoking it closes that connection."""
    manager = daemon.manager()
    vault = approved_app(daemon, manager, app_id="vault", name="Vault")
    vault.put("password", "hunter2")
    attacker = approved_app(daemon, manager, app_id="game", name="A game")
    with pytest.raises(DaemonError) as e:
        attacker.call("hello", app_id="vault")
    assert e.value.code == "bad_request"
    with pytest.raises(DaemonError) as e:
        attacker.call("register", app_id="vault", name="Vault")
    assert e.value.code == "denied"
    for op in ("get", "list"):
        with pytest.raises(DaemonError) as e:
            attacker.call(op, ns="native:vault", key="password")
        assert e.value.code == "denied"
    # A fresh, unapproved connection cannot pick identities one after another either.
    probe = DaemonClient(daemon.url, app_id="game")
    assert probe.hello()["state"] == "token_required"
    with pytest.raises(DaemonError) as e:
        probe.call("hello", app_id="vault")
    assert e.value.code == "bad_request"
    # Revoking the attacker's own app closes its connection.
    manager.call("apps.revoke", app="native:game")
    assert attacker.wait_closed(5)
    assert vault.get("password") == "hunter2"


def test_approval_reaches_only_the_connection_the_user_saw(daemon):
    """A local program that forges a page's Origin while the page waits for
    approval does not receive the token the user gives the page."""
    manager = daemon.manager()
    page = DaemonClient(daemon.url, origin="http://localhost:8000")
    page.register("Notes", "the real page")
    forger = DaemonClient(daemon.url, origin="http://localhost:8000")
    forger.register("Notes", "a program with a forged Origin")
    listed = {a["id"]: a for a in manager.call("apps.list")["apps"]}["web:http://localhost:8000"]
    assert sorted(q["request"] for q in listed["requests"]) == sorted([page.request, forger.request])
    # Two connections ask: the manager must say which one the user approves.
    with pytest.raises(DaemonError) as e:
        manager.call("apps.approve", app="web:http://localhost:8000")
    assert e.value.code == "invalid"
    manager.call("apps.approve", app="web:http://localhost:8000", request=page.request)
    assert page._approved.wait(5) and page.token
    time.sleep(0.5)
    assert not forger._approved.is_set() and forger.token is None
    assert all(ev.get("event") != "approved" for ev in forger.events)
    page.put("diary", "private")
    with pytest.raises(DaemonError) as e:
        forger.get("diary")
    assert e.value.code == "unauthorized"
    # A request whose connection went away cannot be approved for someone else.
    gone = DaemonClient(daemon.url, app_id="com.example.gone")
    gone.register("Gone")
    request = gone.request
    gone.close()
    time.sleep(0.3)
    with pytest.raises(DaemonError) as e:
        manager.call("apps.approve", app="native:com.example.gone", request=request)
    assert e.value.code == "not_found"


def test_two_instances_of_one_app_each_get_their_own_approval(daemon):
    """The same web app in two browsers: each asks, each gets its own token;
    neither replaces the other's; revoking the app ends both."""
    manager = daemon.manager()
    first = approved_app(daemon, manager, origin="http://localhost:8000")
    second = DaemonClient(daemon.url, origin="http://localhost:8000")
    second.register("Notes")
    manager.call("apps.approve", app="web:http://localhost:8000", request=second.request)
    assert second._approved.wait(5) and second.token and second.token != first.token
    for token in (first.token, second.token):
        assert DaemonClient(daemon.url, origin="http://localhost:8000", token=token).hello()["state"] == "approved"
    first.put("shared", "by the first browser")
    assert second.get("shared") == "by the first browser"
    manager.call("apps.revoke", app="web:http://localhost:8000")
    assert first.wait_closed(5) and second.wait_closed(5)
    for token in (first.token, second.token):
        assert DaemonClient(daemon.url, origin="http://localhost:8000", token=token).hello()["state"] == "revoked"


def test_other_os_users_are_refused(tmp_path):
    """Programs of another OS user on this machine cannot use the daemon
    (the owner of the client's socket is checked on every connection)."""
    if os.getuid() != 0 or not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs root (to run a client as another user) and the system's python3")
    d = Daemon(tmp_path / "home")
    # A WebSocket upgrade by hand (the system's python3, no packages): 101 or a refusal.
    script = (
        "import socket, sys\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
        "s.sendall(('GET / HTTP/1.1\\r\\nHost: 127.0.0.1:%s\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n'\n"
        "           'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n' % sys.argv[1]).encode())\n"
        "print(s.recv(200).split(b'\\r\\n')[0].decode())\n"
    )

    def status_line(uid):
        def drop():
            os.setgid(uid)
            os.setuid(uid)
        out = subprocess.run(["/usr/bin/python3", "-c", script, str(d.port)], capture_output=True, text=True, timeout=30,
                             preexec_fn=drop if uid else None, cwd="/", env={"PATH": "/usr/bin:/bin"})
        return out.stdout.strip() or out.stderr.strip()

    try:
        assert " 101 " in status_line(0) + " "
        other = status_line(65534)
        assert " 101 " not in other + " ", f"another OS user was let in: {other}"
    finally:
        d.stop()


def test_a_retried_write_with_its_request_id_is_applied_once(daemon):
    """A client that lost the answer to a write sends it again with the same
    request id — even on a new connection: counters do not double."""
    manager = daemon.manager()
    app = approved_app(daemon, manager)
    app.counter_add("likes", 5, request_id="write-1")
    app.counter_add("likes", 5, request_id="write-1")          # the retry
    assert app.counter("likes") == 5
    again = DaemonClient(daemon.url, app_id="com.example.notes", token=app.token)
    assert again.hello()["state"] == "approved"
    again.counter_add("likes", 5, request_id="write-1")        # from another connection
    again.counter_add("likes", 1, request_id="write-2")
    assert again.counter("likes") == 6
    with pytest.raises(DaemonError) as e:
        again.counter_add("likes", 1, request_id="x" * 65)
    assert e.value.code == "bad_request"


def test_a_client_that_sends_without_reading_is_closed_not_queued_for(tmp_path):
    """The attack: a connection pipelines requests as fast as it can and never
    reads an answer. masqd reads them (its transport never stops reading) but
    holds at most --max-waiting-requests of them: past that the connection is
    closed with its reason, its memory comes back, and another app is served
    all along."""
    d = Daemon(tmp_path / "home", "--max-waiting-requests", "32", "--rate", "100000")
    try:
        manager = d.manager()
        app = approved_app(d, manager)
        app.put("k", "v")
        flood = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        flood.sendall(("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % d.port).encode())
        assert b" 101 " in flood.recv(4096)
        request = b'{"op":"ping","pad":"' + b"x" * 4000 + b'"}'
        masked = bytes([0x81, 0x80 | 126]) + len(request).to_bytes(2, "big") + b"\0\0\0\0" + request
        closed = False
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 30:
            try:
                flood.sendall(masked * 64)
                sent += 64
            except OSError:
                closed = True
                break
            if sent % 1024 == 0:
                assert app.get("k") == "v"      # the other app is served meanwhile
        assert closed, f"masqd kept reading {sent} requests from a client that never read an answer"
        # 32 waiting requests, plus what the sockets' kernel buffers hold.
        assert sent < 20_000, f"closed only after {sent} requests"
        assert app.get("k") == "v"
        assert d.alive()
    finally:
        d.stop()


def test_a_value_of_the_default_maximum_goes_through_the_app_protocol(tmp_path):
    """With masqd's default limits an app writes and reads back a value of the
    store's default maximum (1 MiB, base64 in JSON), and one byte more is
    refused by the store with its reason, not by a closed connection."""
    d = Daemon(tmp_path / "home", "--max-message-bytes", str(2 << 20))
    try:
        app = approved_app(d, d.manager())
        photo = os.urandom(1 << 20)
        app.put("photo", photo)
        assert app.get("photo", binary=True) == photo
        with pytest.raises(DaemonError) as e:
            app.put("too-big", os.urandom((1 << 20) + 1))
        assert e.value.code == "too_large"
        assert app.get("photo", binary=True) == photo
    finally:
        d.stop()

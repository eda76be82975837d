"""Blobs through masqd's app protocol (docs/APP-PROTOCOL.md, "Blobs"), with a
real daemon on 127.0.0.1: an app uploads a file in base64 parts between
blob.begin and blob.commit and reads it back by ranges; a part sent again
is taken once, a commit retried gets the same answer; an aborted upload or
one whose connection went away changes nothing; and every bad request — an
unapproved app, another app's namespace, a part out of order, too large or
not base64, another connection's upload, a key holding an ordinary value —
is answered with a clear code.

Run: MASQD=.build/debug/masqd MASQ_BIN=.build/debug/masq-cli python3 -m pytest Tests/daemon
"""
import base64
import hashlib
import os

import pytest

pytest.importorskip("websockets", reason="pip install websockets")

from masq.daemon import DaemonClient, DaemonError  # noqa: E402
from test_masqd import Daemon, approved_app  # noqa: E402

PART = 512 << 10


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path / "home", "--max-message-bytes", str(1 << 20))
    yield d
    d.stop()


def fails(code, call, *args, **kwargs):
    with pytest.raises(DaemonError) as e:
        call(*args, **kwargs)
    assert e.value.code == code, e.value
    assert e.value.message
    return e.value.message


def upload(app, key, data, **fields):
    begun = app.call("blob.begin", key=key, **fields)
    assert begun["max_part_bytes"] == PART
    for offset in range(0, len(data), PART):
        part = data[offset:offset + PART]
        assert app.call("blob.part", upload=begun["upload"], offset=offset,
                        data=base64.b64encode(part).decode())["received"] == offset + len(part)
    return begun["upload"], app.call("blob.commit", upload=begun["upload"])


def download(app, key, **fields):
    out, offset = b"", 0
    while True:
        r = app.call("blob.read", key=key, offset=offset, **fields)
        out += base64.b64decode(r["data"])
        offset += len(base64.b64decode(r["data"]))
        if r["eof"]:
            return out, r["size"]


def test_upload_and_read_back(daemon):
    manager = daemon.manager()
    app = approved_app(daemon, manager)
    data = os.urandom(3 * 1024 * 1024 + 4321)
    upload_id, info = upload(app, "movie", data, content_type="video/mp4", name="movie.mp4")
    assert info["size"] == len(data) and info["complete"] and info["name"] == "movie.mp4" and info["content_type"] == "video/mp4"
    assert info["new_chunks"] == 4
    # A commit retried (its answer was lost) gets the same answer, once.
    assert app.call("blob.commit", upload=upload_id) == info
    got, size = download(app, "movie")
    assert size == len(data) and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    middle = app.call("blob.read", key="movie", offset=1_000_000, length=100)
    assert base64.b64decode(middle["data"]) == data[1_000_000:1_000_100] and not middle["eof"]
    assert app.call("blob.info", key="movie") == {**info, "new_chunks": 0, "new_bytes": 0}
    app.call("blob.fetch", key="movie")                                  # complete already: nothing to do
    # The key holds the reference (binary: it comes back as base64).
    ref = base64.b64decode(app.call("get", key="movie", encoding="base64")["value"])
    assert ref[:6] == b"\xffMBLOB" and len(ref) < 200
    # The same bytes again add no chunk.
    _, again = upload(app, "copy", data, name="movie.mp4", content_type="video/mp4")
    assert again["new_chunks"] == 0 and again["id"] == info["id"]


def test_parts_are_idempotent_and_in_order(daemon):
    manager = daemon.manager()
    app = approved_app(daemon, manager)
    begun = app.call("blob.begin", key="doc")
    one, two = os.urandom(1000), os.urandom(2000)
    up = begun["upload"]
    assert app.call("blob.part", upload=up, offset=0, data=base64.b64encode(one).decode())["received"] == 1000
    assert app.call("blob.part", upload=up, offset=0, data=base64.b64encode(one).decode())["received"] == 1000  # sent again
    assert "send from there" in fails("invalid", app.call, "blob.part", upload=up, offset=5000, data=base64.b64encode(two).decode())
    fails("bad_request", app.call, "blob.part", upload=up, offset=1000, data="not base64 !!")
    fails("bad_request", app.call, "blob.part", upload=up, data=base64.b64encode(two).decode())
    fails("too_large", app.call, "blob.part", upload=up, offset=1000, data=base64.b64encode(b"x" * (PART + 1)).decode())
    app.call("blob.part", upload=up, offset=1000, data=base64.b64encode(two).decode())
    app.call("blob.commit", upload=up)
    assert download(app, "doc")[0] == one + two


def test_what_is_not_committed_changes_nothing(daemon):
    manager = daemon.manager()
    app = approved_app(daemon, manager)
    app.put("k", "old")
    begun = app.call("blob.begin", key="k")
    app.call("blob.part", upload=begun["upload"], offset=0, data=base64.b64encode(os.urandom(2 << 20)[:PART]).decode())
    app.call("blob.abort", upload=begun["upload"])
    fails("not_found", app.call, "blob.commit", upload=begun["upload"])
    assert app.get("k") == "old"
    # An upload goes with its connection.
    other = DaemonClient(daemon.url, app_id="com.example.notes", token=app.token)
    assert other.hello()["state"] == "approved"
    begun = other.call("blob.begin", key="k")
    fails("not_found", app.call, "blob.part", upload=begun["upload"], offset=0, data="")   # not this connection's
    other.close()
    again = DaemonClient(daemon.url, app_id="com.example.notes", token=app.token)
    again.hello()
    fails("not_found", again.call, "blob.commit", upload=begun["upload"])
    assert again.get("k") == "old"
    # At most 4 uploads at once per connection.
    for i in range(4):
        again.call("blob.begin", key=f"many{i}")
    fails("busy", again.call, "blob.begin", key="one-too-many")


def test_access_and_bad_requests(daemon):
    manager = daemon.manager()
    app = approved_app(daemon, manager)
    stranger = DaemonClient(daemon.url, app_id="com.example.other")
    fails("unauthorized", stranger.call, "blob.begin", key="x")
    fails("unauthorized", stranger.call, "blob.read", key="x")
    other = approved_app(daemon, manager, app_id="com.example.photos", name="Photos")
    upload(other, "pic", b"pixels")
    fails("denied", app.call, "blob.read", key="pic", ns="native:com.example.photos")
    fails("denied", app.call, "blob.begin", key="pic", ns="native:com.example.photos")
    manager.call("apps.grant", app="native:com.example.notes", target="native:com.example.photos", access="read")
    assert base64.b64decode(app.call("blob.read", key="pic", ns="native:com.example.photos")["data"]) == b"pixels"
    fails("denied", app.call, "blob.begin", key="pic2", ns="native:com.example.photos")
    app.put("plain", "text")
    fails("invalid", app.call, "blob.read", key="plain")
    fails("not_found", app.call, "blob.info", key="absent")
    fails("bad_request", app.call, "blob.begin")
    fails("not_found", app.call, "blob.part", upload="nope", offset=0, data="")
    fails("invalid", app.call, "blob.read", key="pic", ns="native:com.example.photos", offset=100)
    assert daemon.alive()

"""Blobs through the Python binding: write and read without holding them in
memory, dedup, collection, encryption at rest, bad input; and between two
devices through a real `masq relay` on 127.0.0.1 (MASQ_BIN): a 50 MB blob,
an interrupted transfer resumed, selective sync (a device that excludes a
namespace; one that fetches blob contents on demand), a chunk that never
arrives; the `masq blob` commands."""

import hashlib
import io
import json
import os
import re
import subprocess
import time

import pytest

import masq
from test_security import run_pairing

MiB = 1 << 20


def wait_until(predicate, seconds=60.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def write_random(path, size):
    """size random bytes into path (1 MiB at a time); returns their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(MiB, left))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


# ---- one store ------------------------------------------------------------


def test_write_and_read_every_way(store, tmp_path):
    data = os.urandom(3 * MiB + 12345)
    src = tmp_path / "photo.jpg"
    src.write_bytes(data)
    info = store.put_blob("photos", "beach", str(src), content_type="image/jpeg")
    assert (info.size, info.chunks, info.name, info.content_type) == (len(data), 4, "photo.jpg", "image/jpeg")
    assert info.complete and info.new_chunks == 4 and info.new_bytes == len(data)
    assert len(info.id) == 64
    # The key holds a small reference, readable without the store.
    ref = store.get("photos", "beach")
    assert len(ref) < 200 and masq.parse_blob_reference(ref)["id"] == info.id
    with pytest.raises(masq.InvalidArgumentError):
        masq.parse_blob_reference(b'{"not": "a blob"}')
    # Back as bytes, to a path, to a file object, in ranges.
    assert store.get_blob("photos", "beach") == data
    store.get_blob("photos", "beach", str(tmp_path / "copy.jpg"))
    assert (tmp_path / "copy.jpg").read_bytes() == data
    sink = io.BytesIO()
    store.get_blob("photos", "beach", sink, offset=MiB - 5, length=10)
    assert sink.getvalue() == data[MiB - 5:MiB + 5]
    assert store.get_blob("photos", "beach", offset=len(data) - 3) == data[-3:]
    assert store.get_blob("photos", "beach", offset=len(data)) == b""
    with pytest.raises(masq.InvalidArgumentError):
        store.get_blob("photos", "beach", offset=len(data) + 1)
    # From bytes and from a stream, with a name.
    assert store.put_blob("photos", "bytes", data, name="b.bin").new_chunks == 0      # the same chunks
    assert store.put_blob("photos", "stream", io.BytesIO(data[:1000]), name="s").size == 1000
    assert store.get_blob("photos", "stream") == data[:1000]
    assert store.put_blob("photos", "empty", b"").size == 0 and store.get_blob("photos", "empty") == b""
    # An ordinary value is not a blob; an absent key is not found.
    store.put("photos", "plain", "text")
    with pytest.raises(masq.InvalidArgumentError):
        store.get_blob("photos", "plain")
    with pytest.raises(masq.NotFoundError):
        store.blob_info("photos", "absent")


def test_bad_sources_and_destinations_change_nothing(store, tmp_path):
    store.put("files", "k", "old")
    with pytest.raises(masq.StorageIOError) as e:
        store.put_blob("files", "k", str(tmp_path / "missing.bin"))
    assert "missing.bin" in str(e.value)

    class Broken(io.RawIOBase):
        def __init__(self):
            self.sent = 0

        def readable(self):
            return True

        def read(self, n=-1):
            if self.sent > 5 * MiB:
                raise OSError("the disk went away")
            self.sent += n
            return b"x" * n

    with pytest.raises(OSError, match="disk went away"):
        store.put_blob("files", "k", Broken(), name="broken")
    assert store.get("files", "k") == b"old"                  # nothing half-written is referenced
    assert store.blob_gc()["chunks_deleted"] >= 1              # its chunks go at the next collection
    store.put_blob("files", "good", b"y" * 100)
    with pytest.raises(masq.StorageIOError):
        store.get_blob("files", "good", str(tmp_path / "no-such-dir" / "out"))
    assert not list(tmp_path.glob("**/*masq-partial*"))

    def refuse(_data):
        raise ValueError("reader gave up")

    class Sink:
        write = staticmethod(refuse)

    with pytest.raises(ValueError, match="gave up"):
        store.get_blob("files", "good", Sink())


def test_dedup_and_collection(store, tmp_path):
    path = tmp_path / "f.bin"
    write_random(path, 5 * MiB + 7)
    first = store.put_blob("a", "one", str(path))
    again = store.put_blob("b", "two", str(path))
    assert first.new_chunks == 6 and again.new_chunks == 0 and again.new_bytes == 0
    report = store.blob_gc()
    assert report["chunks_kept"] == 6 and report["chunks_deleted"] == 0
    store.delete("a", "one")
    assert store.blob_gc()["chunks_deleted"] == 0              # "two" still references them
    store.clear("b")
    report = store.blob_gc()
    assert (report["chunks_deleted"], report["bytes_deleted"], report["chunks_kept"]) == (6, 5 * MiB + 7, 0)


def test_encryption_at_rest(tmp_path):
    marker = b"BLOB-CLEAR-MARKER-" * 4096
    config = {"data_dir": str(tmp_path / "sealed"), "security": {"scrypt_log_n": 10}}
    path = tmp_path / "secret.txt"
    path.write_bytes(marker * 40)
    chunk_hash = hashlib.sha256((marker * 40)[:MiB]).digest()
    with masq.Store.open_config(config) as s:
        s.set_passphrase(None, "pw")
        info = s.put_blob("docs", "secret", str(path))
        assert s.get_blob("docs", "secret") == marker * 40
    raw = b"".join(p.read_bytes() for p in (tmp_path / "sealed").iterdir() if p.is_file())
    assert marker[:36] not in raw and chunk_hash not in raw and bytes.fromhex(info.id) not in raw
    with masq.Store.open_config(config) as s:
        with pytest.raises(masq.DeniedError):
            s.get_blob("docs", "secret")
        s.unlock("pw")
        assert s.get_blob("docs", "secret") == marker * 40


# ---- two devices through a relay --------------------------------------------


@pytest.fixture
def relay_url():
    binary = os.environ.get("MASQ_BIN")
    if not binary:
        pytest.skip("MASQ_BIN (the masq CLI) not set")
    proc = subprocess.Popen([binary, "relay", "--port", "0", "--log-level", "error"], stdout=subprocess.PIPE, text=True)
    try:
        yield re.search(r"ws://\S+", proc.stdout.readline()).group(0)
    finally:
        proc.terminate()
        proc.wait(5)


def device(path, url, **config):
    return masq.Store.open_config({"data_dir": str(path), "transports": [{"plugin": "relay", "options": {"url": url}}], **config})


def test_a_50_mb_blob_crosses_a_relay(tmp_path, relay_url):
    a, b = device(tmp_path / "a", relay_url), device(tmp_path / "b", relay_url)
    try:
        run_pairing(a, b)
        src = tmp_path / "video.bin"
        digest = write_random(src, 50_000_000)
        info = a.put_blob("videos", "holiday", str(src), content_type="video/mp4")
        progress = []
        b.on_blob_progress(lambda blob, fetched, size: progress.append((blob, fetched, size)))
        a.sync_start()
        started = time.time()
        b.sync_once(timeout=240)                                # returns once the blob is whole too
        seconds = time.time() - started
        got = b.blob_info("videos", "holiday")
        assert got.complete and got.id == info.id and got.content_type == "video/mp4"
        b.get_blob("videos", "holiday", str(tmp_path / "out.bin"))
        assert sha256_file(tmp_path / "out.bin") == digest
        assert progress[-1] == (info.id, 50_000_000, 50_000_000)
        assert [p[1] for p in progress] == sorted(p[1] for p in progress)
        print(f"50 MB through the relay in {seconds:.1f} s (debug build)")
        status = a.sync_status()["blobs"]
        assert status["chunks_sent"] >= 48 and status["bytes_sent"] >= 50_000_000 and status["fetching"] == []
    finally:
        a.close()
        b.close()


def test_an_interrupted_transfer_resumes_with_what_is_missing(tmp_path, relay_url):
    a, b = device(tmp_path / "a", relay_url), device(tmp_path / "b", relay_url)
    try:
        run_pairing(a, b)
        src = tmp_path / "big.bin"
        digest = write_random(src, 30 * MiB)
        a.put_blob("files", "big", str(src))
        a.sync_start()
        b.sync_start()
        # The receiver stops (its process ends) part way.
        assert wait_until(lambda: _present(b, "files", "big") >= 8 * MiB, 180)
        b.close()
        b = device(tmp_path / "b", relay_url)
        before = b.blob_info("files", "big")
        assert 8 <= before.present_chunks < 30 and not before.complete
        assert b.sync_status()["blobs"]["fetching"][0]["since"] > 0      # remembered across the restart
        b.sync_start()
        assert wait_until(lambda: b.blob_info("files", "big").complete, 180)
        status = b.sync_status()["blobs"]
        assert status["chunks_received"] == 30 - before.present_chunks   # only what was missing
        b.get_blob("files", "big", str(tmp_path / "out.bin"))
        assert sha256_file(tmp_path / "out.bin") == digest
    finally:
        a.close()
        b.close()


def _present(store, ns, key):
    try:
        return store.blob_info(ns, key).present_bytes
    except masq.NotFoundError:
        return 0


def test_selective_sync_and_on_demand_blobs(tmp_path, relay_url):
    a = device(tmp_path / "a", relay_url)
    phone = device(tmp_path / "phone", relay_url, sync={"exclude": ["photos"], "blobs": "on_demand"})
    try:
        run_pairing(a, phone)
        a.put("notes", "todo", "buy milk")
        a.put_blob("photos", "cat", os.urandom(2 * MiB), name="cat.jpg")
        a.put_blob("docs", "report", os.urandom(3 * MiB + 1), name="report.pdf")
        a.sync_start()
        phone.sync_once(timeout=60)
        assert phone.get("notes", "todo") == b"buy milk"
        assert phone.get("photos", "cat") is None                       # a namespace it does not keep
        report = phone.blob_info("docs", "report")                      # the reference came, not the chunks
        assert report.name == "report.pdf" and report.size == 3 * MiB + 1 and not report.complete and report.present_chunks == 0
        status = phone.sync_status()
        assert status["namespaces"] == {"namespaces": None, "exclude": ["photos"]} and status["blobs"]["mode"] == "on_demand"
        assert status["blobs"]["chunks_received"] == 0
        # Everything was acknowledged: nothing waits to be resent.
        assert wait_until(lambda: a.sync_status()["devices"][0]["they_lack"] == 0, 20)
        # Reading starts the fetch; it is refused until the chunks are here.
        with pytest.raises(masq.UnavailableError) as e:
            phone.get_blob("docs", "report")
        assert "not on this device" in str(e.value)
        phone.sync_start()
        assert wait_until(lambda: phone.blob_info("docs", "report").complete, 60)
        assert phone.get_blob("docs", "report") == a.get_blob("docs", "report")
        assert phone.blob_gc()["chunks_kept"] == 4                      # the photo's chunks never came
    finally:
        a.close()
        phone.close()


def test_a_chunk_that_never_arrives_is_shown_not_looped_on(tmp_path, relay_url):
    a, b = device(tmp_path / "a", relay_url), device(tmp_path / "b", relay_url)
    try:
        run_pairing(a, b)
        # A reference to contents no device holds (its writer lost them).
        a.put_blob("files", "gone", os.urandom(MiB + 5))
        ghost = bytearray(a.get("files", "gone"))
        ghost[7:39] = hashlib.sha256(b"nobody has this").digest()
        a.put("files", "ghost", bytes(ghost))
        a.sync_start()
        b.sync_once(timeout=60)                                          # settles: nobody can send it
        assert b.blob_info("files", "gone").complete
        fetching = b.sync_status()["blobs"]["fetching"]
        assert len(fetching) == 1 and fetching[0]["missing_chunks"] == 2 and fetching[0]["since"] > 0
        b.sync_start()
        assert wait_until(lambda: "no present device" in (b.sync_status()["blobs"]["fetching"][0]["problem"] or ""), 20)
        status = b.sync_status()
        assert status["frames_rejected"] == 0 and status["blobs"]["chunks_rejected"] == 0
        sent = a.sync_status()["transports"][0]["stats"]["frames_sent"]
        time.sleep(2)
        assert a.sync_status()["transports"][0]["stats"]["frames_sent"] - sent < 20   # no loop
        with pytest.raises(masq.UnavailableError):
            b.get_blob("files", "ghost")
        # Deleting the key ends the fetch at the next collection.
        a.delete("files", "ghost")
        assert wait_until(lambda: b.get("files", "ghost") is None, 20)
        assert b.blob_gc()["fetches_dropped"] == 1
        assert wait_until(lambda: b.sync_status()["blobs"]["fetching"] == [], 10)
    finally:
        a.close()
        b.close()


# ---- the command line -------------------------------------------------------


def test_blob_commands(tmp_path):
    binary = os.environ.get("MASQ_BIN")
    if not binary:
        pytest.skip("MASQ_BIN (the masq CLI) not set")
    config = str(tmp_path / "cfg.json")

    def masq_cli(*args, **kw):
        return subprocess.run([binary, *args, "--config", config], capture_output=True, text=kw.get("text", True), input=kw.get("input"))

    assert masq_cli("init", "--data-dir", str(tmp_path / "data")).returncode == 0
    src = tmp_path / "doc.pdf"
    src.write_bytes(os.urandom(2 * MiB + 3))
    out = masq_cli("blob", "put", "docs", "report", str(src), "--type", "application/pdf")
    assert out.returncode == 0 and "3 chunk(s), 3 new" in out.stdout, out.stderr
    out = masq_cli("blob", "put", "docs", "copy", str(src))
    assert "0 new" in out.stdout
    info = json.loads(masq_cli("blob", "info", "docs", "report").stdout)
    assert info["size"] == 2 * MiB + 3 and info["content_type"] == "application/pdf" and info["name"] == "doc.pdf"
    assert masq_cli("blob", "get", "docs", "report", str(tmp_path / "out.pdf")).returncode == 0
    assert (tmp_path / "out.pdf").read_bytes() == src.read_bytes()
    piece = subprocess.run([binary, "blob", "get", "docs", "report", "-", "--offset", "10", "--length", "5", "--config", config], capture_output=True)
    assert piece.stdout == src.read_bytes()[10:15]
    stdin = masq_cli("blob", "put", "docs", "piped", "-", "--name", "p.bin", input=b"from stdin", text=False)
    assert stdin.returncode == 0
    assert masq_cli("blob", "get", "docs", "absent", str(tmp_path / "x")).returncode == 2
    bad = masq_cli("blob", "put", "docs", "k", str(tmp_path / "nope"))
    assert bad.returncode == 1 and "nope" in bad.stderr
    assert masq_cli("del", "docs", "report").returncode == 0 and masq_cli("del", "docs", "copy").returncode == 0
    report = json.loads(masq_cli("blob", "gc").stdout)
    assert report["chunks_deleted"] == 3 and report["chunks_kept"] == 1

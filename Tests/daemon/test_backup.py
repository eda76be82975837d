"""Backups from masqd's manager (BackupOperations.swift), with a real daemon:
the manager writes a profile's backup and fetches it in pieces (the bytes of
the file masqd wrote, which the CLI verifies); the same bytes, uploaded in
pieces, are restored as a new profile holding the app's data; a recovery-key
backup restores with its key; a wrong passphrase, a tampered upload, pieces
out of order, a file name that is a path, an existing profile name — each a
clear error that creates no profile.

Run: MASQD=.build/debug/masqd MASQ_BIN=.build/debug/masq-cli python3 -m pytest Tests/daemon
"""
import base64
import os
import subprocess

import pytest

pytest.importorskip("websockets", reason="pip install websockets")

from masq.daemon import DaemonError  # noqa: E402
from test_masqd import MASQ, approved_app, daemon  # noqa: E402,F401 (daemon is a fixture)


def fails(code, call, *args, **kwargs):
    with pytest.raises(DaemonError) as e:
        call(*args, **kwargs)
    assert e.value.code == code, e.value
    return e.value.message


def download(manager, file, size):
    data = b""
    while len(data) < size:
        piece = manager.call("backup.read", file=file, offset=len(data))
        assert piece["offset"] == len(data) and piece["size"] == size
        data += base64.b64decode(piece["data"])
    assert piece["done"]
    return data


def upload(manager, data):
    piece = manager.call("backup.list")["piece"]
    name = None
    for offset in range(0, len(data), piece):
        r = manager.call("backup.upload", file=name, offset=offset, data=base64.b64encode(data[offset:offset + piece]).decode())
        name = r["file"]
        assert r["size"] == min(len(data), offset + piece)
    return name


def test_backup_download_upload_and_restore_as_a_new_profile(daemon, tmp_path):  # noqa: F811
    manager = daemon.manager()
    app = approved_app(daemon, manager)
    app.put("note", "kept across machines")
    for i in range(200):
        app.put(f"bulk-{i:03d}", "x" * 1000)     # more than one piece at this daemon's message limit

    made = manager.call("backup.create", passphrase="backup pw")
    assert made["file"].startswith("default-") and made["recovery_key"] is None and made["entries"] > 200
    data = download(manager, made["file"], made["size"])
    on_disk = os.path.join(daemon.home, "backups", made["file"])
    assert data == open(on_disk, "rb").read()
    assert oct(os.stat(on_disk).st_mode & 0o777) == "0o600"
    (tmp_path / "dl.bak").write_bytes(data)
    verified = subprocess.run([MASQ, "restore", "--verify", str(tmp_path / "dl.bak")], capture_output=True, text=True,
                              env={**os.environ, "MASQ_BACKUP_PASSPHRASE": "backup pw"})
    assert verified.returncode == 0, verified.stderr

    name = upload(manager, data)
    assert name.startswith("upload-")
    assert fails("denied", manager.call, "backup.restore", file=name, profile="copy", passphrase="wrong")
    assert "copy" not in [p["name"] for p in manager.call("profiles.list")["profiles"]]
    assert not os.path.exists(os.path.join(daemon.home, "profiles", "copy"))
    restored = manager.call("backup.restore", file=name, profile="copy", passphrase="backup pw")
    assert restored["profile"] == "copy" and not restored["locked"] and restored["entries"] == made["entries"]
    assert "copy" in [p["name"] for p in manager.call("profiles.list")["profiles"]]
    entries = manager.call("data.list", profile="copy", ns="native:com.example.notes", prefix="note")["entries"]
    assert entries == [{"key": "note", "value": "kept across machines"}]
    assert not os.path.exists(os.path.join(daemon.home, "backups", name)), "the upload outlived its restore"
    # The same device: its keys came along.
    assert manager.call("devices.list", profile="copy")["this"]["device_id"] == manager.call("devices.list")["this"]["device_id"]
    assert fails("invalid", manager.call, "backup.restore", file=made["file"], profile="copy", passphrase="backup pw")


def test_recovery_key_and_bad_requests(daemon):  # noqa: F811
    manager = daemon.manager()
    made = manager.call("backup.create", recovery=True)
    key = made["recovery_key"]
    assert len(key) == 69
    restored = manager.call("backup.restore", file=made["file"], profile="from-key", passphrase=key.lower())
    assert restored["profile"] == "from-key"
    data = download(manager, made["file"], made["size"])
    tampered = bytearray(data)
    tampered[150] ^= 1
    name = upload(manager, bytes(tampered))
    assert "authenticate" in fails("failed", manager.call, "backup.restore", file=name, profile="bad", passphrase=key)
    assert not os.path.exists(os.path.join(daemon.home, "profiles", "bad"))
    assert "typo" in fails("invalid", manager.call, "backup.restore", file=made["file"], profile="bad", passphrase="0" * 56)
    fails("bad_request", manager.call, "backup.create")
    fails("bad_request", manager.call, "backup.read", file="../masqd.json", offset=0)
    fails("not_found", manager.call, "backup.read", file="nothing.masqbackup", offset=0)
    fails("bad_request", manager.call, "backup.read", file=made["file"], offset=made["size"] + 1)
    first = manager.call("backup.upload", offset=0, data=base64.b64encode(b"abc").decode())
    fails("bad_request", manager.call, "backup.upload", file=first["file"], offset=10, data=base64.b64encode(b"x").decode())
    fails("denied", manager.call, "backup.upload", file=made["file"], offset=made["size"], data=base64.b64encode(b"x").decode())
    fails("bad_request", manager.call, "backup.upload", offset=0, data="not base64!")
    fails("invalid", manager.call, "backup.restore", file=made["file"], profile="Bad Name", passphrase=key)
    fails("invalid", manager.call, "backup.restore", file=made["file"], profile="default", passphrase=key)
    manager.call("backup.delete", file=first["file"])
    fails("not_found", manager.call, "backup.delete", file=first["file"])
    files = [f["file"] for f in manager.call("backup.list")["files"]]
    assert made["file"] in files and first["file"] not in files
    # An app cannot reach any of it.
    app = approved_app(daemon, manager)
    fails("unauthorized", app.call, "backup.list")

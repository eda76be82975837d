"""Backup, restore and export through the Python binding: a round trip on
both storage plugins, a restored device rejoining its group through a real
relay without losing or resurrecting data, every bad backup file refused with
its error and nothing left behind, and the JSON-lines export."""

import base64
import json
import os

import pytest

import masq
from test_security import run_pairing
from test_sync import open_with_relay, relay_url, wait_until  # noqa: F401 (relay_url is a fixture)


def fast(config):
    """Keep scrypt cheap in tests (the backup passphrase uses the store's cost)."""
    return {**config, "security": {"scrypt_log_n": 10}}


def test_round_trip_and_recovery_key(tmp_path, plugin):
    with masq.Store.open_config(fast({"data_dir": str(tmp_path / "src"), "storage": {"plugin": plugin}})) as s:
        s.put("notes", "k", "v")
        s.put("notes", b"\x00binary", bytes(range(256)))
        s.counter_add("app", "likes", 4)
        s.delete("notes", "gone") if s.get("notes", "gone") else None
        original = s.replica_id
        s.backup(tmp_path / "pw.bak", "backup pw")
        key = s.backup_with_recovery_key(tmp_path / "rk.bak")
        with pytest.raises(masq.InvalidArgumentError, match="exists"):
            s.backup(tmp_path / "pw.bak", "again")
    assert len(key) == 69 and key.count("-") == 13
    assert masq.backup_info(tmp_path / "pw.bak") == masq.BackupInfo(format=1, key="passphrase", chunk_bytes=1 << 20)
    assert masq.backup_info(tmp_path / "rk.bak").key == "recovery_key"
    manifest = masq.backup_verify(tmp_path / "pw.bak", "backup pw")
    assert manifest.replica == original and manifest.storage == plugin and not manifest.protected and manifest.entries > 0
    # Restored into SQLite whatever it was kept in.
    masq.restore_config({"data_dir": str(tmp_path / "r1")}, tmp_path / "pw.bak", "backup pw")
    masq.restore_config({"data_dir": str(tmp_path / "r2")}, tmp_path / "rk.bak", key.lower().replace("-", " "))
    for name in ("r1", "r2"):
        with masq.Store.open_config({"data_dir": str(tmp_path / name)}) as r:
            assert r.get("notes", "k") == b"v" and r.get("notes", b"\x00binary") == bytes(range(256))
            assert r.counter("app", "likes") == 4
            assert r.replica_id != original
    # From a config file too.
    (tmp_path / "r3.json").write_text(json.dumps({"data_dir": str(tmp_path / "r3")}))
    masq.restore(tmp_path / "r3.json", tmp_path / "pw.bak", b"backup pw")
    with masq.Store.open(tmp_path / "r3.json") as r:
        assert r.get("notes", "k") == b"v"


def test_bad_backups_are_refused_and_leave_nothing(tmp_path):
    with masq.Store.open_config(fast({"data_dir": str(tmp_path / "src")})) as s:
        for i in range(3000):
            s.put("bulk", f"k{i:05d}", os.urandom(1000))   # several 1 MiB chunks
        s.backup(tmp_path / "good.bak", "pw")
        key = s.backup_with_recovery_key(tmp_path / "rk.bak")
    good = (tmp_path / "good.bak").read_bytes()
    target = tmp_path / "target"

    def attempt(data, secret, error, match):
        bad = tmp_path / "bad.bak"
        bad.write_bytes(data)
        with pytest.raises(error, match=match):
            masq.restore_config({"data_dir": str(target)}, bad, secret)
        assert not target.exists()
        assert not [p for p in os.listdir(tmp_path) if "restoring" in p]

    attempt(good[:-10], "pw", masq.CorruptError, "truncated")
    attempt(good[:len(good) // 2], "pw", masq.CorruptError, "truncated")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 1
    attempt(bytes(flipped), "pw", (masq.BadSignatureError, masq.CorruptError), "authenticate|damaged|truncated")
    chunk0 = 132 + 4 + (int.from_bytes(good[132:136], "big") & 0x7FFFFFFF)
    chunk1 = chunk0 + 4 + (int.from_bytes(good[chunk0:chunk0 + 4], "big") & 0x7FFFFFFF)
    swapped = good[:132] + good[chunk0:chunk1] + good[132:chunk0] + good[chunk1:]
    attempt(swapped, "pw", masq.BadSignatureError, "does not authenticate")
    attempt(good + b"extra", "pw", masq.CorruptError, "after its final chunk")
    attempt(good, "wrong", masq.DeniedError, "wrong passphrase")
    attempt(good[:8] + b"\x07" + good[9:], "pw", masq.UnsupportedError, "format version 7")
    attempt(b"not a backup at all" * 10, "pw", masq.CorruptError, "not a Masq backup")
    rk = (tmp_path / "rk.bak").read_bytes()
    typo = ("Y" if key[0] != "Y" else "Z") + key[1:]
    attempt(rk, typo, masq.InvalidArgumentError, "typo")
    attempt(rk, "pw", masq.InvalidArgumentError, "not a recovery key")
    with pytest.raises(masq.DeniedError):
        masq.backup_verify(tmp_path / "good.bak", "wrong")
    with pytest.raises(masq.NotFoundError):
        masq.backup_info(tmp_path / "missing.bak")
    # A target that is not empty is refused and kept as it was.
    target.mkdir()
    (target / "precious").write_text("keep me")
    with pytest.raises(masq.InvalidArgumentError, match="not empty"):
        masq.restore_config({"data_dir": str(target)}, tmp_path / "good.bak", "pw")
    assert os.listdir(target) == ["precious"]
    with pytest.raises(masq.UnsupportedError, match="persistent"):
        masq.restore_config({"data_dir": str(tmp_path / "mem"), "storage": {"plugin": "memory"}}, tmp_path / "good.bak", "pw")


def test_a_restored_device_rejoins_without_losing_or_resurrecting(tmp_path, relay_url):  # noqa: F811
    a, b = open_with_relay(tmp_path / "a", relay_url), open_with_relay(tmp_path / "b", relay_url)
    a_id = a.device_info()["device_id"]
    b_id = b.device_info()["device_id"]
    run_pairing(a, b)
    a.put("notes", "k", "1")
    a.put("notes", "j", "to be deleted")
    b.sync_start()
    a.sync_once(timeout=30)
    assert wait_until(lambda: b.get("notes", "k") == b"1")
    a.backup(tmp_path / "a.bak", "pw")
    original = a.replica_id
    a.put("notes", "k", "2")
    a.delete("notes", "j")
    a.sync_once(timeout=30)
    assert wait_until(lambda: b.get("notes", "k") == b"2" and b.get("notes", "j") is None)
    a.close()   # device A is lost

    transports = [{"plugin": "relay", "options": {"url": relay_url}}]
    masq.restore_config({"data_dir": str(tmp_path / "a2"), "transports": transports}, tmp_path / "a.bak", "pw")
    a2 = masq.Store.open_config({"data_dir": str(tmp_path / "a2"), "transports": transports})
    try:
        assert a2.device_info()["device_id"] == a_id and a2.replica_id != original
        assert a2.get("notes", "k") == b"1" and a2.get("notes", "j") == b"to be deleted"
        with pytest.raises(masq.DeniedError, match="renew"):
            a2.seal_for_device(b_id, b"never with an old key")
        a2.sync_once(timeout=30)
        for s in (a2, b):
            assert s.get("notes", "k") == b"2"
            assert s.get("notes", "j") is None
        a2.put("notes", "after", "from the restored device")
        a2.sync_once(timeout=30)
        assert wait_until(lambda: b.get("notes", "after") == b"from the restored device")
        assert dict(a2.items("notes")) == dict(b.items("notes"))
    finally:
        a2.close()
        b.close()


def test_export(tmp_path, store):
    store.put("notes", "k", "v")
    store.put("notes", b"\xff\x00", b"\x01\x02")
    store.put("other", "x", "y")
    store.delete("other", "x")
    store.counter_add("app", "likes", 3)
    store.export(tmp_path / "out.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert lines[0]["masq_export"] == 1 and len(lines[0]["replica"]) == 16
    assert lines[-1] == {"masq_export_end": True, "records": 3}
    rows = {(r["ns"], base64.b64decode(r["key_b64"])): r for r in lines[1:-1]}
    assert base64.b64decode(rows[("notes", b"k")]["value_b64"]) == b"v"
    assert base64.b64decode(rows[("notes", b"\xff\x00")]["value_b64"]) == b"\x01\x02"
    assert rows[("app", b"likes")]["counter"] is True and base64.b64decode(rows[("app", b"likes")]["value_b64"]) == b"3"
    assert ("other", b"x") not in rows
    assert oct(os.stat(tmp_path / "out.jsonl").st_mode & 0o777) == "0o600"
    with pytest.raises(masq.InvalidArgumentError, match="exists"):
        store.export(tmp_path / "out.jsonl")

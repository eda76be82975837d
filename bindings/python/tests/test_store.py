import re
import threading
import time

import pytest

import masq
from masq import _native
from conftest import ROOT


def test_version_matches_header():
    header = (ROOT / "include" / "masq.h").read_text()
    assert masq.version() == re.search(r'#define MASQ_VERSION_STRING "([^"]+)"', header).group(1)


def test_status_codes_match_header():
    header = (ROOT / "include" / "masq.h").read_text()
    for name, value in re.findall(r"#define MASQ_(OK|E_[A-Z_]+) (\d+)", header):
        assert getattr(_native, name) == int(value), name


def test_put_get_delete(store):
    store.put("notes", "hello", "world")
    assert store.get("notes", "hello") == b"world"
    assert store.get("notes", b"hello") == b"world"
    store.put("notes", b"\x00bin", b"\x00\x01\x02")
    assert store.get("notes", b"\x00bin") == b"\x00\x01\x02"
    store.put("notes", "empty", b"")
    assert store.get("notes", "empty") == b""
    assert store.get("notes", "missing") is None
    assert store.get("notes", "missing", b"dflt") == b"dflt"
    store.delete("notes", "hello")
    assert store.get("notes", "hello") is None
    store.delete("notes", "hello")  # idempotent
    assert store.replica_id > 0


def test_namespace_view_is_dict_like(store):
    notes = store.namespace("notes")
    notes["a"] = "1"
    notes[b"b"] = b"2"
    assert notes["a"] == b"1"
    assert "b" in notes and "zzz" not in notes
    assert sorted(notes) == [b"a", b"b"]
    assert len(notes) == 2
    with pytest.raises(KeyError):
        notes["zzz"]
    with pytest.raises(masq.NotFoundError) as info:
        notes["zzz"]
    assert info.value.status == _native.E_NOT_FOUND
    assert info.value.status_name == "MASQ_E_NOT_FOUND"
    del notes["a"]
    assert notes.to_dict() == {b"b": b"2"}


def test_items_prefix_and_order(store):
    store.set_all("app", {f"item/{i:03d}": str(i) for i in range(300)} | {"other": "x"})
    items = store.items("app", prefix="item/")
    assert [k for k, _ in items] == [f"item/{i:03d}".encode() for i in range(300)]
    assert items[5][1] == b"5"
    assert store.keys("app", prefix="oth") == [b"other"]
    assert all(v is None for _, v in store.items("app", keys_only=True))


def test_set_all_transaction_replace_and_deletes(store):
    store.set_all("app", [("a", "1"), ("b", "2"), ("c", "3")])
    store.set_all("app", {"a": None, "d": "4"})
    assert store.get_all("app") == {b"b": b"2", b"c": b"3", b"d": b"4"}
    store.set_all("app", {"z": "only"}, replace=True)
    assert store.get_all("app") == {b"z": b"only"}
    with pytest.raises(masq.InvalidArgumentError) as info:
        store.set_all("app", [("ok", "1"), ("", "empty key")])
    assert "entry 1" in str(info.value)
    assert store.get("app", "ok") is None  # all or nothing
    store.clear("app")
    assert store.get_all("app") == {}


def test_namespaces(store):
    store.put("zeta", "k", "v")
    store.put("alpha", "k", "v")
    assert store.namespaces() == ["alpha", "zeta"]


def test_bad_input_raises_pythonic_errors(tmp_path, plugin):
    config = {"data_dir": str(tmp_path), "storage": {"plugin": plugin},
              "limits": {"max_key_bytes": 4, "max_value_bytes": 4}}
    with masq.Store.open_config(config) as store:
        with pytest.raises(masq.TooLargeError) as info:
            store.put("app", "12345", "v")
        assert isinstance(info.value, ValueError)
        assert "max_key_bytes" in str(info.value)
        with pytest.raises(masq.TooLargeError):
            store.put("app", "k", "12345")
        with pytest.raises(masq.InvalidArgumentError):
            store.put("app", "", "v")
        with pytest.raises(masq.InvalidArgumentError):
            store.put("bad\nname", "k", "v")
        with pytest.raises(masq.InvalidArgumentError):
            store.put("\udcff", "k", "v")  # not valid UTF-8 once encoded
        with pytest.raises(TypeError):
            store.put("app", 5, "v")
        assert store.get_all("app") == {}
    with pytest.raises(masq.ClosedError):
        store.put("app", "k", "v")
    store.close()  # idempotent


def test_config_and_plugin_errors(tmp_path):
    with pytest.raises(masq.ConfigError) as info:
        masq.Store.open_config('{"storage": {"plugin": "sqlite"}, "extra": 1}')
    assert "extra" in str(info.value)
    with pytest.raises(masq.ConfigError):
        masq.Store.open_config("{not json")
    with pytest.raises(masq.ConfigError):
        masq.Store.open(tmp_path / "missing.json")
    with pytest.raises(masq.PluginError) as info:
        masq.Store.open_config({"data_dir": str(tmp_path), "storage": {"plugin": "nosuch"}})
    assert "libmasq_storage_nosuch.so" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_wrong_abi_plugin_is_refused(tmp_path, bad_plugin_dir):
    with pytest.raises(masq.ABIError) as info:
        masq.Store.open_config({"data_dir": str(tmp_path), "plugin_path": [bad_plugin_dir],
                                "storage": {"plugin": "badabi"}})
    assert "ABI 99" in str(info.value)
    reports = {p.name or p.path.rsplit("/", 1)[-1]: p for p in masq.scan_plugins()}
    assert reports["sqlite"].ok and reports["sqlite"].kind == "storage" and reports["sqlite"].abi_version == 1


def test_open_from_file(tmp_path, plugin):
    config = tmp_path / "masq.json"
    config.write_text('{"data_dir": "d", "storage": {"plugin": "%s"}}' % plugin)
    with masq.Store.open(config) as store:
        store.put("app", "k", "v")
        assert store.get("app", "k") == b"v"
    assert (tmp_path / "d").is_dir()


def test_persistence_across_reopen(tmp_path):
    config = {"data_dir": str(tmp_path), "storage": {"plugin": "sqlite"}}
    with masq.Store.open_config(config) as store:
        store.put("app", "k", "kept")
        replica = store.replica_id
    with masq.Store.open_config(config) as store:
        assert store.get("app", "k") == b"kept"
        assert store.replica_id == replica


def test_watch_reports_changes_in_order_from_another_thread(store):
    seen, threads = [], set()
    done = threading.Event()

    def on_change(change):
        seen.append(change)
        threads.add(threading.get_ident())
        if len(seen) == 3:
            done.set()

    watch = store.watch(on_change, ns="app")
    store.put("app", "a", "1")
    store.put("other", "x", "1")
    store.set_all("app", {"b": "2", "a": None})
    assert done.wait(10)
    watch.cancel()
    store.put("app", "after", "1")
    time.sleep(0.05)
    assert [(c.kind, c.key, c.value) for c in seen] == [("put", b"a", b"1"), ("put", b"b", b"2"), ("delete", b"a", None)]
    assert all(c.origin == "local" and c.namespace == "app" and c.replica == store.replica_id for c in seen)
    assert seen[0].timestamp < seen[1].timestamp
    assert threading.get_ident() not in threads
    with pytest.raises(masq.NotFoundError):
        store.unwatch(watch.id)


def test_watch_callback_exception_does_not_break_the_store(store, capsys):
    def broken(change):
        raise RuntimeError("boom")

    with store.namespace("app").watch(broken):
        store.put("app", "k", "v")
        time.sleep(0.1)
    assert store.get("app", "k") == b"v"


def test_log_handler_receives_lines(tmp_path):
    lines = []
    masq.set_log_handler(lambda level, component, message: lines.append((level, component)), masq.LOG_DEBUG)
    try:
        with masq.Store.open_config({"data_dir": str(tmp_path), "storage": {"plugin": "sqlite"}}):
            pass
    finally:
        masq.set_log_handler(None)
    assert any(component == "kernel" for _, component in lines)


def test_threads_share_a_store(store):
    def writer(t):
        for i in range(100):
            store.put("threads", f"{t}-{i}", "v")

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(store.get_all("threads")) == 400

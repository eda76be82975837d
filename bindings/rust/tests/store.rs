//! The store through the safe API: real stores in temporary directories, on
//! the SQLite plugin (and the plain-C memory plugin when it is on the
//! search path), loaded by the library with dlopen.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{config, open, storage_plugins, TempDir};
use masq::{ChangeKind, Config, ErrorKind, Origin, Plugin, Store};

#[test]
fn version_matches_the_header() {
    let header = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../include/masq.h")).unwrap();
    let line = header.lines().find(|l| l.starts_with("#define MASQ_VERSION_STRING")).unwrap();
    assert_eq!(format!("\"{}\"", masq::version()), line.split_whitespace().nth(2).unwrap());
    assert_eq!(masq::version(), masq::HEADER_VERSION);
    assert_eq!(masq::status_name(masq::sys::MASQ_E_NOT_FOUND), "MASQ_E_NOT_FOUND");
    assert_eq!(masq::status_name(999), "MASQ_E_UNKNOWN");
    for code in 1..=18 {
        assert_eq!(ErrorKind::from_code(code).code(), code);
        assert!(!matches!(ErrorKind::from_code(code), ErrorKind::Other(_)));
    }
    assert_eq!(ErrorKind::from_code(77), ErrorKind::Other(77));
}

#[test]
fn put_get_delete() {
    for plugin in storage_plugins() {
        let dir = TempDir::new("basic");
        let store = open(dir.path(), plugin);
        store.put("notes", "hello", "world").unwrap();
        assert_eq!(store.get("notes", "hello").unwrap().unwrap(), b"world");
        assert_eq!(store.get("notes", b"hello").unwrap().unwrap(), b"world");
        store.put("notes", b"\x00bin", [0u8, 1, 2]).unwrap();
        assert_eq!(store.get("notes", b"\x00bin").unwrap().unwrap(), [0u8, 1, 2]);
        store.put("notes", "empty", b"").unwrap();
        let empty = store.get("notes", "empty").unwrap().expect("an empty value is a value");
        assert!(empty.is_empty());
        assert!(store.get("notes", "missing").unwrap().is_none());
        store.delete("notes", "hello").unwrap();
        assert!(store.get("notes", "hello").unwrap().is_none());
        store.delete("notes", "hello").unwrap(); // idempotent
        assert!(store.replica_id().unwrap() > 0);
        let value = store.get("notes", b"\x00bin").unwrap().unwrap();
        assert_eq!(format!("{:?}", value), "b\"\\x00\\x01\\x02\"");
        assert_eq!(value.into_vec(), vec![0u8, 1, 2]);
        store.close().unwrap();
    }
}

#[test]
fn namespace_view() {
    for plugin in storage_plugins() {
        let dir = TempDir::new("ns");
        let store = open(dir.path(), plugin);
        let notes = store.namespace("notes").unwrap();
        assert_eq!(notes.name(), "notes");
        notes.put("a", "1").unwrap();
        notes.put(b"b", b"2").unwrap();
        assert_eq!(notes.get("a").unwrap().unwrap(), b"1");
        assert!(notes.contains("b").unwrap() && !notes.contains("zzz").unwrap());
        assert_eq!(notes.keys("").unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        notes.delete("a").unwrap();
        let all = notes.get_all().unwrap();
        assert_eq!(all.to_vec(), vec![(b"b".to_vec(), b"2".to_vec())]);
        notes.counter_add("likes", 2).unwrap();
        assert_eq!(notes.counter("likes").unwrap(), 2);
        notes.clear().unwrap();
        assert!(notes.get("b").unwrap().is_none());
        // A cleared (or deleted) counter reads 0; the library still lists it
        // as a live key holding "0" (reported: masq.h says clear deletes
        // every key), so only the total is checked here.
        assert_eq!(notes.counter("likes").unwrap(), 0);
    }
}

#[test]
fn listing_by_prefix_in_order() {
    for plugin in storage_plugins() {
        let dir = TempDir::new("list");
        let store = open(dir.path(), plugin);
        let mut entries: Vec<(String, Option<String>)> =
            (0..300).map(|i| (format!("item/{:03}", i), Some(i.to_string()))).collect();
        entries.push(("other".into(), Some("x".into())));
        store.set_all("app", entries).unwrap();

        let items = store.items("app", "item/").unwrap();
        let expected: Vec<Vec<u8>> = (0..300).map(|i| format!("item/{:03}", i).into_bytes()).collect();
        assert_eq!(items.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), expected);
        assert_eq!(items[5].1, b"5");
        assert_eq!(store.keys("app", "oth").unwrap(), vec![b"other".to_vec()]);

        // Stopping early, keys only, and writing from inside the callback.
        let mut seen = 0;
        store
            .for_each("app", "item/", |_, _| {
                seen += 1;
                seen < 10
            })
            .unwrap();
        assert_eq!(seen, 10);
        let mut keys = 0;
        store
            .for_each_key("app", "", |key| {
                keys += 1;
                if key == b"other" {
                    store.put("app", "written-while-listing", "ok").unwrap();
                }
                true
            })
            .unwrap();
        assert_eq!(keys, 301);
        assert_eq!(store.get("app", "written-while-listing").unwrap().unwrap(), b"ok");

        // One snapshot: the entries own one library allocation.
        let all = store.get_all("app").unwrap();
        assert_eq!(all.len(), 302);
        assert_eq!(all.value("item/042").unwrap(), b"42");
        assert!(all.value("nope").is_none());
        let (first_key, first_value) = all.get(0).unwrap();
        assert_eq!((first_key, first_value), (&b"item/000"[..], &b"0"[..]));
        assert_eq!(all.iter().count(), 302);
    }
}

#[test]
fn a_panic_in_a_listing_callback_reaches_the_caller() {
    let dir = TempDir::new("panic-list");
    let store = open(dir.path(), "sqlite");
    store.put("app", "a", "1").unwrap();
    store.put("app", "b", "2").unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = store.for_each("app", "", |_, _| panic!("boom in the callback"));
    }));
    let payload = caught.expect_err("the panic resumes on the caller's thread");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in the callback"));
    // The store is fine afterwards.
    assert_eq!(store.keys("app", "").unwrap().len(), 2);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = store.for_each_namespace(|_| panic!("boom in namespaces"));
    }));
    assert!(caught.is_err());
    assert_eq!(store.namespaces().unwrap(), vec!["app".to_string()]);
}

#[test]
fn set_all_is_one_transaction() {
    for plugin in storage_plugins() {
        let dir = TempDir::new("setall");
        let store = open(dir.path(), plugin);
        store.set_all("app", vec![("a", Some("1")), ("b", Some("2")), ("c", Some("3"))]).unwrap();
        store.set_all("app", vec![("a", None), ("d", Some("4"))]).unwrap();
        assert_eq!(
            store.get_all("app").unwrap().to_vec(),
            vec![(b"b".to_vec(), b"2".to_vec()), (b"c".to_vec(), b"3".to_vec()), (b"d".to_vec(), b"4".to_vec())]
        );
        // An empty value is a value, not a delete.
        store.set_all("app", vec![("e", Some(""))]).unwrap();
        assert_eq!(store.get("app", "e").unwrap().unwrap(), b"");
        store.replace_all("app", vec![("z", Some("only"))]).unwrap();
        assert_eq!(store.get_all("app").unwrap().to_vec(), vec![(b"z".to_vec(), b"only".to_vec())]);

        let error = store.set_all("app", vec![("ok", Some("1")), ("", Some("empty key"))]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Invalid);
        assert!(error.message().contains("entry 1"), "{}", error);
        assert!(store.get("app", "ok").unwrap().is_none(), "all or nothing");
        store.set_all::<Vec<(&str, Option<&str>)>, _, _>("app", vec![]).unwrap();
        store.clear("app").unwrap();
        assert!(store.get_all("app").unwrap().is_empty());
    }
}

#[test]
fn namespaces_in_bytewise_order() {
    for plugin in storage_plugins() {
        let dir = TempDir::new("namespaces");
        let store = open(dir.path(), plugin);
        for ns in ["zeta", "alpha", "Zoo", "app", "apple"] {
            store.put(ns, "k", "v").unwrap();
        }
        // masq.h: ascending bytewise order of the UTF-8 names.
        assert_eq!(store.namespaces().unwrap(), vec!["Zoo", "alpha", "app", "apple", "zeta"]);
        let mut first = Vec::new();
        store
            .for_each_namespace(|ns| {
                first.push(ns.to_string());
                false
            })
            .unwrap();
        assert_eq!(first, vec!["Zoo"]);
    }
}

#[test]
fn bad_input_gives_clear_errors() {
    for plugin in storage_plugins() {
        let dir = TempDir::new("bad");
        let store = Store::open_with(&config(dir.path(), plugin).max_key_bytes(4).max_value_bytes(4)).unwrap();

        let e = store.put("app", "12345", "v").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        assert_eq!(e.code(), masq::sys::MASQ_E_TOO_LARGE);
        assert_eq!(e.status_name(), "MASQ_E_TOO_LARGE");
        assert!(e.message().contains("max_key_bytes"), "{}", e);
        assert_eq!(store.put("app", "k", "12345").unwrap_err().kind(), ErrorKind::TooLarge);
        assert_eq!(store.put("app", "", "v").unwrap_err().kind(), ErrorKind::Invalid);
        assert_eq!(store.put("bad\nname", "k", "v").unwrap_err().kind(), ErrorKind::Invalid);
        assert_eq!(store.put("", "k", "v").unwrap_err().kind(), ErrorKind::Invalid);

        // A NUL inside a string never reaches the library (it would cut the
        // string short): refused here, with a message saying where.
        let e = store.put("ap\0p", "k", "v").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert!(e.message().contains("namespace contains a NUL byte (at byte 2)"), "{}", e);
        assert!(store.namespace("a\0").is_err());
        assert_eq!(store.watch(Some("x\0"), "", |_| {}).unwrap_err().kind(), ErrorKind::Invalid);
        assert_eq!(store.set_device_name("dev\0ice").unwrap_err().kind(), ErrorKind::Invalid);
        assert_eq!(Store::open_config("{\"a\":\0}", None).unwrap_err().kind(), ErrorKind::Invalid);
        // A NUL inside a key or value is just a byte.
        store.put("app", b"a\0b", b"\0").unwrap();

        assert_eq!(store.get_all("app").unwrap().len(), 1);
        assert_eq!(store.counter_add("app", "a\0b", 1).unwrap_err().kind(), ErrorKind::Invalid, "not a counter");

        // Errors display with their status name.
        let shown = store.put("app", "12345", "v").unwrap_err().to_string();
        assert!(shown.contains("MASQ_E_TOO_LARGE"), "{}", shown);
        store.close().unwrap();
    }
}

#[test]
fn an_oversized_value_at_the_default_limit() {
    let dir = TempDir::new("oversized");
    let store = open(dir.path(), "sqlite");
    let limit = 1 << 20;
    store.put("photos", "max", vec![7u8; limit]).unwrap();
    assert_eq!(store.get("photos", "max").unwrap().unwrap().len(), limit);
    let e = store.put("photos", "over", vec![7u8; limit + 1]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert!(e.message().contains("max_value_bytes"), "{}", e);
    assert!(store.get("photos", "over").unwrap().is_none(), "nothing written");
    let e = store.set_all("photos", vec![("ok", Some(vec![1u8])), ("over", Some(vec![0u8; limit + 1]))]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert!(store.get("photos", "ok").unwrap().is_none());
}

#[test]
fn the_thread_last_error() {
    let dir = TempDir::new("lasterror");
    let store = open(dir.path(), "sqlite");
    assert!(store.put("bad\nname", "k", "v").is_err());
    let last = masq::last_error().expect("the failed call set it");
    assert_eq!(last.kind(), ErrorKind::Invalid);
    store.put("app", "k", "v").unwrap();
    assert!(masq::last_error().is_none(), "a success resets it (masq.h)");
}

#[test]
fn config_and_plugin_errors() {
    let dir = TempDir::new("config");
    let e = Store::open_config(r#"{"storage": {"plugin": "sqlite"}, "extra": 1}"#, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.message().contains("extra"), "{}", e);
    assert_eq!(Store::open_config("{not json", None).unwrap_err().kind(), ErrorKind::Config);
    assert_eq!(Store::open(dir.join("missing.json")).unwrap_err().kind(), ErrorKind::Config);
    let e = Store::open_with(&config(dir.path(), "nosuch")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Plugin);
    assert!(e.message().contains("libmasq_storage_nosuch.so"), "{}", e);
    // Options reach the plugin, which refuses what it does not know.
    let e = Store::open_with(&Config::new().data_dir(dir.path()).storage(Plugin::new("sqlite").option("nope", 1)))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{}", e);
    // A non-UTF-8 path cannot go in a JSON config.
    use std::os::unix::ffi::OsStrExt;
    let odd = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/\xff"));
    assert_eq!(Config::new().data_dir(odd).to_json().unwrap_err().kind(), ErrorKind::Invalid);
}

#[test]
fn config_json_is_escaped() {
    let json = Config::new()
        .data_dir("/tmp/a \"quoted\" \\ dir")
        .plugin_path("/p1")
        .storage(Plugin::new("sqlite").option("synchronous", "normal"))
        .transport(Plugin::relay("ws://127.0.0.1:1/"))
        .max_batch_entries(10)
        .scrypt_log_n(10)
        .log_level(masq::LogLevel::Error)
        .member("wallet", "null")
        .to_json()
        .unwrap();
    let v = masq::json::Value::parse(&json).unwrap();
    assert_eq!(v.get("data_dir").unwrap().as_str(), Some("/tmp/a \"quoted\" \\ dir"));
    assert_eq!(
        v.get("transports").unwrap().as_array().unwrap()[0].get("options").unwrap().get("url").unwrap().as_str(),
        Some("ws://127.0.0.1:1/")
    );
    assert_eq!(v.get("security").unwrap().get("scrypt_log_n").unwrap().as_u64(), Some(10));
    assert!(v.get("wallet").unwrap().is_null());
}

#[test]
fn wrong_abi_plugin_is_refused_and_scanned() {
    let bad = match std::env::var_os("MASQ_BAD_PLUGIN_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            eprintln!("note: MASQ_BAD_PLUGIN_DIR not set (Tests/c/run.sh builds them); skipped");
            return;
        }
    };
    let dir = TempDir::new("abi");
    let e = Store::open_with(&Config::new().data_dir(dir.path()).plugin_path(&bad).storage(Plugin::new("badabi")))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Abi);
    assert!(e.message().contains("ABI 99"), "{}", e);

    // The scan reports every file on the search path, broken ones with why.
    let cfg = dir.join("cfg.json");
    std::fs::write(&cfg, Config::new().plugin_path(&bad).to_json().unwrap()).unwrap();
    let found = masq::scan_plugins(Some(&cfg)).unwrap();
    let sqlite = found.iter().find(|p| p.name.as_deref() == Some("sqlite")).expect("sqlite is found");
    assert!(sqlite.is_loadable() && sqlite.kind == Some(masq::PluginKind::Storage) && sqlite.abi_version == 1);
    assert!(sqlite.path.is_absolute());
    let badabi = found.iter().find(|p| p.path.ends_with("libmasq_storage_badabi.so")).expect("badabi is reported");
    assert_eq!(badabi.error.as_ref().unwrap().kind(), ErrorKind::Abi);
    let notelf = found.iter().find(|p| p.path.ends_with("libmasq_storage_notelf.so")).expect("notelf is reported");
    assert!(!notelf.is_loadable() && notelf.name.is_none());
}

#[test]
fn open_from_a_config_file_with_relative_paths() {
    for plugin in storage_plugins() {
        let dir = TempDir::new("file");
        let cfg = dir.join("masq.json");
        std::fs::write(&cfg, format!(r#"{{"data_dir": "d", "storage": {{"plugin": "{}"}}}}"#, plugin)).unwrap();
        let store = Store::open(&cfg).unwrap();
        store.put("app", "k", "v").unwrap();
        assert_eq!(store.get("app", "k").unwrap().unwrap(), b"v");
        drop(store);
        assert!(dir.join("d").is_dir());
        // Relative to base_dir with open_config.
        let store = Store::open_config(r#"{"data_dir": "e"}"#, Some(dir.path())).unwrap();
        store.put("app", "k", "v").unwrap();
        store.close().unwrap();
        assert!(dir.join("e").is_dir());
    }
}

#[test]
fn data_and_replica_survive_reopening() {
    let dir = TempDir::new("reopen");
    let store = open(dir.path(), "sqlite");
    store.put("app", "k", "kept").unwrap();
    let replica = store.replica_id().unwrap();
    store.close().unwrap();
    let store = open(dir.path(), "sqlite");
    assert_eq!(store.get("app", "k").unwrap().unwrap(), b"kept");
    assert_eq!(store.replica_id().unwrap(), replica);
}

#[test]
fn counters() {
    for plugin in storage_plugins() {
        let dir = TempDir::new("counters");
        let store = open(dir.path(), plugin);
        assert_eq!(store.counter("app", "likes").unwrap(), 0);
        store.counter_add("app", "likes", 5).unwrap();
        store.counter_add("app", b"likes", -2).unwrap();
        assert_eq!(store.counter("app", "likes").unwrap(), 3);
        assert_eq!(store.get("app", "likes").unwrap().unwrap(), b"3", "a counter reads as decimal text");
        assert_eq!(store.put("app", "likes", "plain").unwrap_err().kind(), ErrorKind::Invalid);
        store.put("app", "plain", "x").unwrap();
        assert_eq!(store.counter_add("app", "plain", 1).unwrap_err().kind(), ErrorKind::Invalid);
        store.delete("app", "likes").unwrap();
        assert_eq!(store.counter("app", "likes").unwrap(), 0);
        store.counter_add("app", "big", i64::MAX).unwrap();
        assert_eq!(store.counter("app", "big").unwrap(), i64::MAX);
    }
}

#[test]
fn watch_reports_changes_in_order_from_a_library_thread() {
    for plugin in storage_plugins() {
        let dir = TempDir::new("watch");
        let store = open(dir.path(), plugin);
        let (tx, rx) = mpsc::channel();
        let me = std::thread::current().id();
        let watch = store
            .watch(Some("app"), "", move |change| {
                assert_ne!(std::thread::current().id(), me, "never the writer's thread");
                tx.send(change.to_record()).unwrap();
            })
            .unwrap();
        store.put("app", "a", "1").unwrap();
        store.put("other", "x", "1").unwrap();
        store.set_all("app", vec![("b", Some("2")), ("a", None)]).unwrap();
        let seen: Vec<_> = (0..3).map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("a change")).collect();
        let id = watch.id();
        watch.cancel().unwrap();
        store.put("app", "after", "1").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "nothing after the watch was cancelled");

        type Summary<'a> = Vec<(ChangeKind, &'a [u8], Option<&'a [u8]>)>;
        let summary: Summary<'_> = seen.iter().map(|c| (c.kind, c.key.as_slice(), c.value.as_deref())).collect();
        assert_eq!(
            summary,
            vec![
                (ChangeKind::Put, &b"a"[..], Some(&b"1"[..])),
                (ChangeKind::Put, &b"b"[..], Some(&b"2"[..])),
                (ChangeKind::Delete, &b"a"[..], None)
            ]
        );
        let replica = store.replica_id().unwrap();
        assert!(seen.iter().all(|c| c.origin == Origin::Local && c.namespace == "app" && c.replica == replica));
        assert!(seen.iter().all(|c| c.lost_value.is_none() && !c.lost_was_deleted));
        assert!(seen[0].timestamp < seen[1].timestamp);
        assert_eq!(store.unwatch(id).unwrap_err().kind(), ErrorKind::NotFound);
    }
}

#[test]
fn watch_by_prefix_on_every_namespace() {
    let dir = TempDir::new("watch-prefix");
    let store = open(dir.path(), "sqlite");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let watch = store
        .watch(None, "user/", move |c| sink.lock().unwrap().push((c.namespace().to_string(), c.key().to_vec())))
        .unwrap();
    store.put("a", "user/1", "x").unwrap();
    store.put("b", "other", "x").unwrap();
    store.put("c", "user/2", "x").unwrap();
    assert!(common::wait_until(10, || seen.lock().unwrap().len() == 2));
    drop(watch); // dropping the guard unwatches
    store.put("a", "user/3", "x").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("a".to_string(), b"user/1".to_vec()), ("c".to_string(), b"user/2".to_vec())]
    );
}

/// Counts drops of the closure's captured state.
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn watch_closures_are_freed_on_unwatch_and_on_close() {
    let dir = TempDir::new("watch-free");
    let dropped = Arc::new(AtomicUsize::new(0));
    let store = open(dir.path(), "sqlite");
    let flag = DropFlag(dropped.clone());
    let watch = store
        .watch(None, "", move |_| {
            let _keep = &flag;
        })
        .unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    watch.cancel().unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "freed once unwatch returned");

    let flag = DropFlag(dropped.clone());
    let detached = store
        .watch(None, "", move |_| {
            let _keep = &flag;
        })
        .unwrap()
        .detach();
    store.put("app", "k", "v").unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "a detached watch keeps its closure");
    store.close().unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 2, "freed when the store closed");
    let _ = detached;
}

#[test]
fn a_panicking_watch_callback_does_not_break_the_store() {
    let dir = TempDir::new("watch-panic");
    let store = open(dir.path(), "sqlite");
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let _watch = store
        .namespace("app")
        .unwrap()
        .watch("", move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            panic!("boom in a watch callback");
        })
        .unwrap();
    store.put("app", "k", "v").unwrap();
    store.put("app", "k2", "v").unwrap();
    assert!(common::wait_until(10, || calls.load(Ordering::SeqCst) == 2), "later changes still delivered");
    assert_eq!(store.get("app", "k").unwrap().unwrap(), b"v");
}

#[test]
fn unwatch_from_inside_the_callback() {
    let dir = TempDir::new("watch-self");
    let store = Arc::new(open(dir.path(), "sqlite"));
    let weak = Arc::downgrade(&store);
    let id_cell: Arc<Mutex<Option<masq::WatchId>>> = Arc::new(Mutex::new(None));
    let id_in = id_cell.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let id = store
        .watch(None, "", move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            if let (Some(store), Some(id)) = (weak.upgrade(), *id_in.lock().unwrap()) {
                // Stops later deliveries; the closure running now is kept
                // alive until the store closes.
                store.unwatch(id).unwrap();
            }
        })
        .unwrap()
        .detach();
    *id_cell.lock().unwrap() = Some(id);
    store.put("app", "a", "1").unwrap();
    assert!(common::wait_until(10, || calls.load(Ordering::SeqCst) == 1));
    store.put("app", "b", "1").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn dropping_the_last_handle_inside_a_callback_closes_the_store_elsewhere() {
    let dir = TempDir::new("watch-drop");
    let store = Arc::new(open(dir.path(), "sqlite"));
    let weak = Arc::downgrade(&store);
    let (tx, rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let freed = Arc::new(AtomicUsize::new(0));
    let flag = DropFlag(freed.clone());
    store
        .watch(None, "", move |_| {
            let _keep = &flag;
            // Hold a strong handle while the main thread drops its own: the
            // store's last handle goes away here, on the callback thread.
            let strong = weak.upgrade();
            release_rx.lock().unwrap().recv().unwrap();
            drop(strong);
            tx.send(()).unwrap();
        })
        .unwrap()
        .detach();
    store.put("app", "a", "1").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(store);
    release_tx.send(()).unwrap();
    rx.recv_timeout(Duration::from_secs(10)).expect("the callback returned (no deadlock)");
    // A thread of the binding's closed the store, then freed the closure.
    assert!(common::wait_until(10, || freed.load(Ordering::SeqCst) == 1));
    let store = Store::open_with(&config(dir.path(), "sqlite")).unwrap();
    assert_eq!(store.get("app", "a").unwrap().unwrap(), b"1");
}

#[test]
fn progress_closures_are_replaced_and_freed() {
    let dir = TempDir::new("progress-free");
    let store = open(dir.path(), "sqlite");
    let dropped = Arc::new(AtomicUsize::new(0));
    let first = DropFlag(dropped.clone());
    store
        .set_sync_progress(move |_, _, _| {
            let _keep = &first;
        })
        .unwrap();
    let second = DropFlag(dropped.clone());
    store
        .set_sync_progress(move |_, _, _| {
            let _keep = &second;
        })
        .unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the replaced closure is freed");
    store.clear_sync_progress().unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 2, "the removed closure is freed");
    let third = DropFlag(dropped.clone());
    store
        .set_sync_progress(move |_, _, _| {
            let _keep = &third;
        })
        .unwrap();
    store.close().unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 3, "freed when the store closed");
}

#[test]
fn log_handler_receives_lines() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let dropped = Arc::new(AtomicUsize::new(0));
    let flag = DropFlag(dropped.clone());
    masq::set_log_handler(masq::LogLevel::Debug, move |level, component, message| {
        let _keep = &flag;
        sink.lock().unwrap().push((level, component.to_string(), message.to_string()));
    })
    .unwrap();
    let dir = TempDir::new("log");
    drop(open(dir.path(), "sqlite"));
    // A panicking handler is contained; the one it replaces is freed (once
    // a line being delivered to it, if any, is done).
    let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let once = panicked.clone();
    masq::set_log_handler(masq::LogLevel::Debug, move |_, _, _| {
        if !once.swap(true, Ordering::SeqCst) {
            panic!("boom in a log handler");
        }
    })
    .unwrap();
    assert!(common::wait_until(10, || dropped.load(Ordering::SeqCst) == 1));
    drop(open(dir.path(), "sqlite"));
    assert!(panicked.load(Ordering::SeqCst), "the panicking handler ran");
    assert_eq!(masq::set_log_handler(masq::LogLevel::Debug, |_, _, _| {}).map(|_| ()), Ok(()));
    masq::reset_log_handler().unwrap();
    let lines = lines.lock().unwrap();
    assert!(lines.iter().any(|(_, component, _)| component == "kernel"), "{:?}", *lines);
    assert!(lines.iter().all(|(level, _, _)| *level <= masq::LogLevel::Debug));
}

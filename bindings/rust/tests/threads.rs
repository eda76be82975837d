//! Threads: what the header lets several threads do, the types say (and
//! these tests do it for real).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{open, storage_plugins, TempDir};
use masq::{Bytes, Entries, PairTask, Pairing, Role, Session, SessionOptions, Store};

fn send_and_sync<T: Send + Sync>() {}
fn send<T: Send>() {}

#[test]
fn the_types_claim_what_the_header_allows() {
    // masq.h: a store may be used from any number of threads at once.
    send_and_sync::<Store>();
    // Memory the library returned is plain memory; masq_free is thread-safe.
    send_and_sync::<Bytes>();
    send_and_sync::<Entries>();
    // Pairing tasks: wait and cancel are thread-safe.
    send_and_sync::<PairTask<'static>>();
    // Sessions and pairing handles: one thread at a time, so Send only
    // (compile_fail doctests on Session and Pairing check they are not Sync).
    send::<Session>();
    send::<Pairing<'static>>();
    send_and_sync::<masq::Error>();
}

#[test]
fn threads_share_a_store_by_reference() {
    for plugin in storage_plugins() {
        let dir = TempDir::new("threads");
        let store = open(dir.path(), plugin);
        let barrier = Barrier::new(4);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..100 {
                        store.put("threads", format!("{}-{}", t, i), "v").unwrap();
                        assert_eq!(store.get("threads", format!("{}-{}", t, i)).unwrap().unwrap(), b"v");
                    }
                    store.counter_add("threads", "total", 100).unwrap();
                });
            }
        });
        assert_eq!(store.get_all("threads").unwrap().len(), 401);
        assert_eq!(store.counter("threads", "total").unwrap(), 400);
    }
}

#[test]
fn an_arc_store_with_readers_writers_and_a_watch() {
    let dir = TempDir::new("arc");
    let store = Arc::new(open(dir.path(), "sqlite"));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let reader_store = Arc::downgrade(&store);
    // The watch callback reads the store from the library's thread.
    let _watch = store
        .watch(Some("w"), "", move |change| {
            if let Some(store) = reader_store.upgrade() {
                let value = store.get("w", change.key()).unwrap();
                assert!(value.is_some() || change.value().is_none());
            }
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..50 {
                    store.put("w", format!("{}/{}", t, i), [t as u8; 16]).unwrap();
                    let _ = store.items("w", format!("{}/", t)).unwrap();
                }
                store.get("w", format!("{}/0", t)).unwrap().unwrap()
            })
        })
        .collect();
    // Bytes returned on one thread, dropped (masq_free) on another.
    let values: Vec<Bytes> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(values.iter().enumerate().all(|(t, v)| v.as_slice() == [t as u8; 16]));
    assert!(
        common::wait_until(20, || seen.load(Ordering::SeqCst) == 200),
        "{} changes seen",
        seen.load(Ordering::SeqCst)
    );
}

#[test]
fn concurrent_watches_and_unwatches() {
    let dir = TempDir::new("watch-churn");
    let store = open(dir.path(), "sqlite");
    let calls = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..200 {
                store.put("churn", format!("k{}", i), "v").unwrap();
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..50 {
                    let counter = calls.clone();
                    let watch = store.watch(Some("churn"), "", move |_| {
                        counter.fetch_add(1, Ordering::SeqCst);
                    });
                    std::thread::sleep(Duration::from_millis(1));
                    watch.unwrap().cancel().unwrap();
                }
            });
        }
    });
    store.close().unwrap();
}

#[test]
fn a_session_moves_between_threads() {
    let a = [7u8; 32];
    let b = [9u8; 32];
    let a_public = masq::crypto::x25519_public(&a).unwrap();
    let b_public = masq::crypto::x25519_public(&b).unwrap();
    let mut i = Session::new(None, &SessionOptions::new("KK", Role::Initiator).static_key(&a).remote_static(&b_public))
        .unwrap();
    let mut r = Session::new(None, &SessionOptions::new("KK", Role::Responder).static_key(&b).remote_static(&a_public))
        .unwrap();
    let m1 = i.write_handshake(b"").unwrap();
    // The responder goes to another thread, answers, and comes back.
    let (mut r, m2) = std::thread::spawn(move || {
        r.read_handshake(&m1).unwrap();
        let m2 = r.write_handshake(b"").unwrap().to_vec();
        (r, m2)
    })
    .join()
    .unwrap();
    i.read_handshake(&m2).unwrap();
    let sealed = r.seal(b"across threads", b"").unwrap();
    let opened = std::thread::spawn(move || i.open(&sealed, b"").unwrap().to_vec()).join().unwrap();
    assert_eq!(opened, b"across threads");
}

#[test]
fn primitives_from_many_threads() {
    std::thread::scope(|s| {
        for t in 0..4u8 {
            s.spawn(move || {
                for _ in 0..50 {
                    let key = [t; 32];
                    let sealed =
                        masq::crypto::aead_seal(masq::crypto::Aead::ChaCha20Poly1305, &key, &[0; 12], b"", b"x")
                            .unwrap();
                    assert_eq!(
                        masq::crypto::aead_open(masq::crypto::Aead::ChaCha20Poly1305, &key, &[0; 12], b"", &sealed)
                            .unwrap(),
                        b"x"
                    );
                    // Per-thread last error: a failure here is not another thread's.
                    assert!(masq::crypto::aead_open(
                        masq::crypto::Aead::ChaCha20Poly1305,
                        &[t ^ 1; 32],
                        &[0; 12],
                        b"",
                        &sealed
                    )
                    .is_err());
                    assert_eq!(masq::last_error().unwrap().kind(), masq::ErrorKind::BadSignature);
                }
            });
        }
    });
}

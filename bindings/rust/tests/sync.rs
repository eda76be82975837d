//! Sync between two stores in this process through a real `masq relay` on
//! 127.0.0.1 (the CLI from MASQ_BIN, or beside the linked library): paired
//! in memory by frames, or through the relay by library tasks; and sharing
//! a namespace with another person through a real Connectoid service.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{masq_bin, run_pairing, wait_until, Relay, TempDir};
use masq::{AcceptInto, ChangeKind, Config, ErrorKind, Origin, Plugin, ShareOptions, ShareRole, ShareStatus, Store};

fn relay_or_skip() -> Option<Relay> {
    match masq_bin() {
        Some(bin) => Some(Relay::start(&bin)),
        None => {
            eprintln!("note: no masq CLI (set MASQ_BIN); relay tests skipped");
            None
        }
    }
}

fn open_with_relay(dir: &Path, url: &str) -> Store {
    Store::open_with(&Config::new().data_dir(dir).transport(Plugin::relay(url))).unwrap()
}

#[test]
fn sync_without_a_transport_is_a_config_error() {
    let dir = TempDir::new("no-transport");
    let store = common::open(dir.path(), "sqlite");
    assert_eq!(store.sync_start().unwrap_err().kind(), ErrorKind::Config);
    assert!(!store.sync_status().unwrap().running);
    assert_eq!(
        store.pair_offer(None, Duration::ZERO).unwrap_err().kind(),
        ErrorKind::Config,
        "no relay to pair through"
    );
}

#[test]
fn two_devices_sync_through_a_relay() {
    let relay = match relay_or_skip() {
        Some(r) => r,
        None => return,
    };
    let dir = TempDir::new("sync");
    let a = open_with_relay(&dir.join("a"), &relay.url);
    let b = open_with_relay(&dir.join("b"), &relay.url);
    run_pairing(&a, &b);
    let (a_id, b_id) = (a.device_info().unwrap().device_id, b.device_info().unwrap().device_id);

    a.put("notes", "hello", "from a").unwrap();
    a.counter_add("app", "likes", 2).unwrap();
    b.counter_add("app", "likes", 3).unwrap();
    a.put("clash", "k", "A").unwrap();
    b.put("clash", "k", "B").unwrap(); // concurrent with A's write: one wins everywhere, the loss is reported

    let conflicts = Arc::new(Mutex::new(Vec::new()));
    let remote = Arc::new(Mutex::new(Vec::new()));
    let mut watches = Vec::new();
    for s in [&a, &b] {
        let sink = conflicts.clone();
        watches.push(
            s.watch(Some("clash"), "", move |c| {
                if c.kind() == ChangeKind::Conflict {
                    sink.lock().unwrap().push(c.to_record());
                }
            })
            .unwrap(),
        );
    }
    let sink = remote.clone();
    watches.push(b.watch(Some("notes"), "", move |c| sink.lock().unwrap().push(c.to_record())).unwrap());
    let progress = Arc::new(Mutex::new(Vec::new()));
    let sink = progress.clone();
    b.set_sync_progress(move |device, received, remaining| {
        sink.lock().unwrap().push((device.to_string(), received, remaining))
    })
    .unwrap();

    a.sync_start().unwrap();
    assert_eq!(a.sync_start().unwrap_err().kind(), ErrorKind::Busy, "already running");
    b.sync_once(Duration::from_secs(30)).unwrap();
    assert_eq!(b.get("notes", "hello").unwrap().unwrap(), b"from a");
    assert!(wait_until(20, || a.counter("app", "likes").unwrap() == 5));
    assert_eq!(b.counter("app", "likes").unwrap(), 5);
    let winner = a.get("clash", "k").unwrap().unwrap().to_vec();
    assert!(winner == b"A" || winner == b"B");
    assert_eq!(b.get("clash", "k").unwrap().unwrap(), winner);
    assert!(wait_until(20, || !conflicts.lock().unwrap().is_empty()));
    let loser: &[u8] = if winner == b"A" { b"B" } else { b"A" };
    for c in conflicts.lock().unwrap().iter() {
        assert_eq!(c.value.as_deref(), Some(&winner[..]));
        assert_eq!(c.lost_value.as_deref(), Some(loser));
        assert!(!c.lost_was_deleted);
    }
    assert!(wait_until(10, || !remote.lock().unwrap().is_empty()));
    let arrived = remote.lock().unwrap()[0].clone();
    assert_eq!((arrived.origin, arrived.key.as_slice()), (Origin::Remote, &b"hello"[..]));
    assert_eq!(arrived.replica, a.replica_id().unwrap());
    let progress = progress.lock().unwrap().clone();
    assert!(!progress.is_empty(), "progress reported");
    assert_eq!(progress.last().unwrap().0, a_id);
    assert_eq!(progress.last().unwrap().2, 0);

    let status = a.sync_status().unwrap();
    assert!(status.running && status.connected, "{:?}", status.json);
    assert_eq!(status.devices[0].device_id, b_id);
    let transport = &status.transports[0];
    assert_eq!(transport.plugin, "relay");
    assert!(transport.stat("frames_sent").unwrap() > 0);
    assert_eq!(transport.stat("frames_rejected"), Some(0));
    assert_eq!(status.frames_rejected, 0);
    assert!(a.sync_status_json().unwrap().contains("\"running\": true"));

    // Live: a write on A reaches B's background sync.
    b.sync_start().unwrap();
    a.put("notes", "live", "yes").unwrap();
    assert!(wait_until(20, || b.get("notes", "live").unwrap().is_some()));
    b.clear_sync_progress().unwrap();
    a.sync_stop().unwrap();
    b.sync_stop().unwrap();
    assert!(!a.sync_status().unwrap().running);
    drop(watches);
    a.close().unwrap();
    b.close().unwrap();
}

#[test]
fn pairing_through_a_relay_with_library_tasks() {
    let relay = match relay_or_skip() {
        Some(r) => r,
        None => return,
    };
    let dir = TempDir::new("pair-task");
    let a = open_with_relay(&dir.join("a"), &relay.url);
    let b = open_with_relay(&dir.join("b"), &relay.url);
    let (done_tx, done_rx) = mpsc::channel();
    let offer = a
        .pair_offer_with(None, Duration::from_secs(60), move |result| {
            done_tx.send(result.map(|d| d.device_id)).unwrap();
        })
        .unwrap();
    let link = offer.link().unwrap().to_string();
    assert!(link.starts_with("masq://pair/") && link.contains('#'));
    let join = b.pair_join(&link, Duration::from_secs(30)).unwrap();
    let joined = join.wait().unwrap();
    let offered = offer.wait().unwrap();
    assert_eq!(joined.device_id, a.device_info().unwrap().device_id);
    assert_eq!(offered.device_id, b.device_info().unwrap().device_id);
    assert_eq!(offered.fingerprint, b.device_info().unwrap().fingerprint);
    // The completion closure ran once, on the task's thread.
    assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(), offered.device_id);
    drop((offer, join));
    assert_eq!(a.devices().unwrap().len(), 1);

    a.put("notes", "hello", "paired by the API").unwrap();
    a.sync_start().unwrap();
    b.sync_once(Duration::from_secs(30)).unwrap();
    assert_eq!(b.get("notes", "hello").unwrap().unwrap(), b"paired by the API");
    a.sync_stop().unwrap();

    // Cancelled while waiting: ends Closed; the closure hears it.
    let (tx, rx) = mpsc::channel();
    let offer = a.pair_offer_with(None, Duration::from_secs(60), move |r| tx.send(r.map(|_| ())).unwrap()).unwrap();
    assert!(offer.wait_timeout(Duration::from_millis(200)).unwrap().is_none(), "still running");
    offer.cancel();
    assert_eq!(offer.wait().unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap_err().kind(), ErrorKind::Closed);
    drop(offer);
    // Expired: a 1-second offer nobody answers.
    let expired = a.pair_offer(None, Duration::from_secs(1)).unwrap().wait().unwrap_err();
    assert!(expired.message().contains("expired"), "{}", expired);
    // Damaged links are refused at once; an unreachable relay fails at once
    // (and the closure is dropped uncalled).
    assert!(b.pair_join("not a link", Duration::ZERO).is_err());
    assert_eq!(b.pair_join("masq://pair/x\0", Duration::ZERO).unwrap_err().kind(), ErrorKind::Invalid);
    let called = Arc::new(Mutex::new(false));
    let flag = called.clone();
    assert!(a
        .pair_offer_with(Some("ws://127.0.0.1:1/"), Duration::from_secs(5), move |_| *flag.lock().unwrap() = true)
        .is_err());
    assert_eq!(Arc::strong_count(&called), 1, "the closure was dropped");
    assert!(!*called.lock().unwrap());
    // Dropping a running task cancels it and returns.
    drop(a.pair_offer(None, Duration::from_secs(60)).unwrap());
    assert_eq!(a.devices().unwrap().len(), 1);
}

/// `masq connectoid serve --port 0`, stopped (by its own process id) when dropped.
struct Connectoid {
    child: Child,
    url: String,
}

impl Connectoid {
    fn start(bin: &Path, dir: &Path) -> Connectoid {
        let mut child = Command::new(bin)
            .args(["connectoid", "serve", "--port", "0", "--db"])
            .arg(dir.join("connectoid.sqlite3"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start masq connectoid serve");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut url = None;
        for _ in 0..10 {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                url = Some(u.to_string());
                break;
            }
        }
        Connectoid { child, url: url.expect("the service printed its URL") }
    }
}

impl Drop for Connectoid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_sharing(dir: &Path, service: &str) -> Store {
    let sharing = format!(
        r#"{{"services": [{}], "resend_ms": 2000, "transport": {{"plugin": "connectoid", "options": {{"interval_ms": 200, "timeout_ms": 3000}}}}}}"#,
        masq::json::quote(service)
    );
    Store::open_with(&Config::new().data_dir(dir).member("sharing", sharing)).unwrap()
}

#[test]
fn sharing_a_namespace_with_another_person() {
    let bin = match masq_bin() {
        Some(b) => b,
        None => {
            eprintln!("note: no masq CLI (set MASQ_BIN); sharing test skipped");
            return;
        }
    };
    let dir = TempDir::new("share");
    let service = Connectoid::start(&bin, dir.path());
    let alice = open_sharing(&dir.join("alice"), &service.url);
    let bob = open_sharing(&dir.join("bob"), &service.url);
    alice.put("notes", "hello", "from alice").unwrap();
    alice.put("private", "secret", "not shared").unwrap();

    let (link, offered) = alice.share_create("notes", "bob", ShareOptions::default()).unwrap();
    assert!(link.starts_with("masq://share/") && link.contains("connectoid=") && link.contains('#'), "{}", link);
    assert_eq!((offered.role.clone(), offered.status.clone()), (ShareRole::Owner, ShareStatus::Offered));
    assert_eq!(offered.namespace.as_deref(), Some("notes"));
    assert!(!offered.read_only);

    let claimed = bob.share_accept(&link, "alice", AcceptInto::New("notes")).unwrap();
    assert_eq!((claimed.role.clone(), claimed.status.clone()), (ShareRole::Guest, ShareStatus::Claimed));
    assert_eq!(claimed.id, offered.id);
    alice.share_sync_start().unwrap();
    bob.share_sync_once(Duration::from_secs(30)).unwrap();
    assert!(wait_until(30, || bob.get("notes", "hello").unwrap().is_some()));
    assert_eq!(bob.get("notes", "hello").unwrap().unwrap(), b"from alice");
    assert!(bob.get("private", "secret").unwrap().is_none(), "only the shared namespace travels");

    bob.put("notes", "from-bob", "hi alice").unwrap();
    bob.share_sync_once(Duration::from_secs(30)).unwrap();
    assert!(wait_until(30, || alice.get("notes", "from-bob").unwrap().is_some()));

    let (a_share, b_share) = (alice.share_info(&offered.id).unwrap(), bob.share_info(&offered.id).unwrap());
    assert_eq!(a_share.status, ShareStatus::Active);
    assert!(a_share.fingerprint.is_some());
    assert_eq!(a_share.fingerprint, b_share.fingerprint, "both sides show the same fingerprint");
    alice.set_share_nickname(&offered.id, "Bob B.").unwrap();
    assert_eq!(alice.shares().unwrap()[0].nickname.as_deref(), Some("Bob B."));

    assert_eq!(alice.share_info("nope").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        bob.share_accept(&link, "again", AcceptInto::Default).unwrap_err().kind(),
        ErrorKind::Denied,
        "a link works once"
    );
    assert_eq!(bob.share_accept("masq://pair/x#y", "x", AcceptInto::Default).unwrap_err().kind(), ErrorKind::Invalid);

    alice.unshare(&offered.id).unwrap();
    assert!(alice.shares().unwrap().is_empty());
    assert_eq!(alice.get("notes", "from-bob").unwrap().unwrap(), b"hi alice", "the data stays");
    alice.share_sync_stop().unwrap();
}

#[test]
fn sharing_needs_a_service() {
    let dir = TempDir::new("share-none");
    let store = common::open(dir.path(), "sqlite");
    assert_eq!(store.share_create("notes", "bob", ShareOptions::default()).unwrap_err().kind(), ErrorKind::Config);
    assert!(store.shares().unwrap().is_empty());
    assert_eq!(store.share_create("notes", "b\0b", ShareOptions::default()).unwrap_err().kind(), ErrorKind::Invalid);
}

//! Helpers shared by the integration tests: temporary directories, finding
//! plugins and the CLI, a relay process, pairing two stores in memory.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use masq::{Config, Pairing, Plugin, Store};

/// A directory removed (with its content) when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "masq-rust-{}-{}-{}-{}",
            tag,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            nanos
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The directory of the libmasq.so this crate linked (build.rs), if known.
pub fn linked_lib_dir() -> Option<PathBuf> {
    let dir = env!("MASQ_LINKED_LIB_DIR");
    if dir.is_empty() {
        None
    } else {
        Some(PathBuf::from(dir))
    }
}

/// The storage plugins the tests run on: sqlite (beside libmasq.so)
/// always; memory (plain C, built by Tests/c/run.sh into
/// Tests/c/build/plugins) when a directory of MASQ_PLUGIN_PATH holds it.
/// When MASQ_PLUGIN_PATH is set (the project's test command sets it) a
/// missing memory plugin is a failure, not a skip.
pub fn storage_plugins() -> Vec<&'static str> {
    let path = std::env::var_os("MASQ_PLUGIN_PATH");
    let has_memory = path
        .as_ref()
        .map(|p| std::env::split_paths(p).any(|d| d.join("libmasq_storage_memory.so").is_file()))
        .unwrap_or(false);
    if has_memory {
        vec!["sqlite", "memory"]
    } else {
        assert!(path.is_none(), "MASQ_PLUGIN_PATH is set but holds no libmasq_storage_memory.so");
        eprintln!("note: the memory plugin is not on the search path (set MASQ_PLUGIN_PATH=Tests/c/build/plugins); sqlite only");
        vec!["sqlite"]
    }
}

pub fn config(dir: &Path, plugin: &str) -> Config {
    Config::new().data_dir(dir).storage(Plugin::new(plugin))
}

pub fn open(dir: &Path, plugin: &str) -> Store {
    Store::open_with(&config(dir, plugin)).expect("open a store")
}

/// Poll `predicate` until it holds or `seconds` pass.
pub fn wait_until(seconds: u64, mut predicate: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if predicate() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    predicate()
}

/// The masq CLI: MASQ_BIN, else masq-cli beside the linked library.
pub fn masq_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("MASQ_BIN") {
        return Some(PathBuf::from(bin));
    }
    linked_lib_dir().map(|d| d.join("masq-cli")).filter(|p| p.is_file())
}

/// `masq relay --port 0` on 127.0.0.1, stopped (by its own process id) when dropped.
pub struct Relay {
    child: Child,
    pub url: String,
}

impl Relay {
    pub fn start(bin: &Path) -> Relay {
        let mut child = Command::new(bin)
            .args(["relay", "--host", "127.0.0.1", "--port", "0", "--log-level", "error"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start masq relay");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("relay stdout"))
            .read_line(&mut line)
            .expect("read the relay's first line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("ws://"))
            .unwrap_or_else(|| panic!("no ws:// URL in the relay's first line: {:?}", line))
            .to_string();
        Relay { child, url }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pair `offerer` and `joiner` by handing frames between them in memory.
pub fn run_pairing<'a, 'b>(offerer: &'a Store, joiner: &'b Store) -> (Pairing<'a>, Pairing<'b>) {
    let mut offer = offerer.pairing_offer(Some("tcp:127.0.0.1:9"), Duration::from_secs(600)).expect("offer");
    let link = offer.link().expect("an offer has a link").to_string();
    assert!(link.starts_with("masq://pair/") && link.contains('#'), "{}", link);
    let mut join = joiner.pairing_join(&link).expect("join");
    let mut frame = join.start().expect("first frame").to_vec();
    for _ in 0..10 {
        let reply = offer.receive(&frame).expect("offerer receives");
        let reply_frame = reply.reply.expect("the offerer answers").to_vec();
        let back = join.receive(&reply_frame).expect("joiner receives");
        if reply.paired && back.paired {
            return (offer, join);
        }
        frame = back.reply.expect("the joiner answers").to_vec();
    }
    panic!("pairing did not finish");
}

//! Backup, restore and export through the safe API. Compiled only when the
//! linked libmasq.so has the backup functions (build.rs probes it);
//! tests/header.rs reports any declared function the library lacks.
#![cfg(not(masq_lib_lacks_backup))]

mod common;

use common::TempDir;
use masq::json::Value;
use masq::{BackupKey, Config, ErrorKind, Plugin, Store};

fn store_at(dir: &std::path::Path) -> Store {
    Store::open_with(&Config::new().data_dir(dir).scrypt_log_n(10)).unwrap()
}

#[test]
fn backup_verify_and_restore_with_a_passphrase() {
    let dir = TempDir::new("backup");
    let store = store_at(&dir.join("a"));
    store.set_device_name("laptop").unwrap();
    store.put("notes", "hello", "world").unwrap();
    store.counter_add("app", "likes", 3).unwrap();
    let device = store.device_info().unwrap();
    let replica = store.replica_id().unwrap();

    let file = dir.join("a.masqbackup");
    store.backup(&file, "backup pass").unwrap();
    assert_eq!(store.backup(&file, "backup pass").unwrap_err().kind(), ErrorKind::Invalid, "path exists");
    assert_eq!(store.backup(dir.join("empty-pass"), "").unwrap_err().kind(), ErrorKind::Invalid);

    let info = masq::backup_info(&file).unwrap();
    assert_eq!(info.key, BackupKey::Passphrase);
    assert!(info.format >= 1 && info.chunk_bytes > 0);
    assert_eq!(masq::backup_verify(&file, "wrong").unwrap_err().kind(), ErrorKind::Denied);
    let manifest = masq::backup_verify(&file, "backup pass").unwrap();
    assert_eq!(manifest.device_id.as_deref(), Some(device.device_id.as_str()));
    assert_eq!(manifest.device_name.as_deref(), Some("laptop"));
    assert_eq!(manifest.replica, replica);
    assert!(!manifest.protected);
    assert!(Value::parse(&manifest.config).is_ok(), "the config is JSON text");

    // Restored elsewhere: the same device, the same data, a new replica id.
    let json = Config::new().data_dir(dir.join("restored")).to_json().unwrap();
    masq::restore_config(&json, None, &file, "backup pass").unwrap();
    let restored = Store::open_config(&json, None).unwrap();
    assert_eq!(restored.get("notes", "hello").unwrap().unwrap(), b"world");
    assert_eq!(restored.counter("app", "likes").unwrap(), 3);
    assert_eq!(restored.device_info().unwrap().device_id, device.device_id);
    assert_ne!(restored.replica_id().unwrap(), replica);
    // Nothing is ever overwritten.
    assert_eq!(masq::restore_config(&json, None, &file, "backup pass").unwrap_err().kind(), ErrorKind::Invalid);
    // A restore into the memory plugin is refused (not persistent).
    let memory = Config::new().data_dir(dir.join("mem")).storage(Plugin::new("memory")).to_json().unwrap();
    assert!(masq::restore_config(&memory, None, &file, "backup pass").is_err());
    assert!(!dir.join("mem").join("masq.db").exists());
}

#[test]
fn a_recovery_key_and_a_config_file() {
    let dir = TempDir::new("recovery");
    let store = store_at(&dir.join("a"));
    store.put("notes", "k", "v").unwrap();
    let file = dir.join("b.masqbackup");
    let key = store.backup_with_recovery_key(&file).unwrap();
    assert!(key.len() >= 56, "{}", key);
    assert_eq!(masq::backup_info(&file).unwrap().key, BackupKey::RecoveryKey);
    // Spaces, dashes and case do not matter.
    let relaxed: String = key.chars().filter(|c| *c != '-').collect::<String>().to_lowercase();
    masq::backup_verify(&file, &relaxed).unwrap();
    assert!(masq::backup_verify(&file, "AAAA-BBBB").is_err());

    let cfg = dir.join("restored.json");
    std::fs::write(&cfg, r#"{"data_dir": "restored"}"#).unwrap();
    masq::restore(&cfg, &file, key.as_bytes()).unwrap();
    assert_eq!(Store::open(&cfg).unwrap().get("notes", "k").unwrap().unwrap(), b"v");
}

#[test]
fn damaged_backups_are_detected() {
    let dir = TempDir::new("damaged");
    let store = store_at(&dir.join("a"));
    store.set_all("bulk", (0..200).map(|i| (format!("k{}", i), Some(vec![i as u8; 500])))).unwrap();
    let file = dir.join("c.masqbackup");
    store.backup(&file, "pw").unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let tampered = dir.join("tampered.masqbackup");
    std::fs::write(&tampered, &bytes).unwrap();
    let e = masq::backup_verify(&tampered, "pw").unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::BadSignature | ErrorKind::Corrupt), "{}", e);
    let truncated = dir.join("truncated.masqbackup");
    std::fs::write(&truncated, &std::fs::read(&file).unwrap()[..middle]).unwrap();
    assert!(masq::backup_verify(&truncated, "pw").is_err());
    assert_eq!(masq::backup_info(dir.join("none")).unwrap_err().kind(), ErrorKind::NotFound);
    std::fs::write(dir.join("not-a-backup"), b"hello").unwrap();
    assert_eq!(masq::backup_info(dir.join("not-a-backup")).unwrap_err().kind(), ErrorKind::Corrupt);
}

#[test]
fn export_as_json_lines() {
    let dir = TempDir::new("export");
    let store = store_at(&dir.join("a"));
    store.put("notes", "hello", "world").unwrap();
    store.put("other", b"\x00bin", b"\xff").unwrap();
    store.counter_add("app", "likes", 2).unwrap();
    let file = dir.join("export.jsonl");
    store.export(&file).unwrap();
    assert_eq!(store.export(&file).unwrap_err().kind(), ErrorKind::Invalid, "path exists");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| Value::parse(l).unwrap()).collect();
    assert_eq!(lines[0].get("masq_export").and_then(Value::as_u64), Some(1));
    let last = lines.last().unwrap();
    assert_eq!(last.get("masq_export_end").and_then(Value::as_bool), Some(true));
    assert_eq!(last.get("records").and_then(Value::as_u64), Some(lines.len() as u64 - 2));
    assert!(lines.iter().any(|l| l.get("ns").and_then(Value::as_str) == Some("app") && l.get("counter").is_some()));

    store.set_passphrase("pw").unwrap();
    store.lock().unwrap();
    assert_eq!(store.export(dir.join("locked.jsonl")).unwrap_err().kind(), ErrorKind::Denied);
    store.backup(dir.join("locked.masqbackup"), "pw2").unwrap(); // a locked store can be backed up
}

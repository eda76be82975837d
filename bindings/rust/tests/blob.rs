//! Blobs through the safe API: files and Read/Write streams in and out,
//! ranges, references, errors from the reader or writer, collection, and
//! a blob syncing to another device through a relay. Compiled only when the
//! linked libmasq.so has the blob functions (build.rs probes it).
#![cfg(not(masq_lib_lacks_blobs))]

mod common;

use std::io::{self, Cursor, Read, Write};
use std::sync::{Arc, Mutex};

use common::{open, run_pairing, wait_until, TempDir};
use masq::{Config, ErrorKind, Plugin, Store};

const MIB: usize = 1 << 20;

fn data(len: usize) -> Vec<u8> {
    // Not all the same chunk, so chunks are not deduplicated within the blob.
    (0..len).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

#[test]
fn files_and_streams_in_and_out() {
    let dir = TempDir::new("blob");
    let store = open(dir.path(), "sqlite");
    let bytes = data(2 * MIB + 12345);
    let source = dir.join("photo.jpg");
    std::fs::write(&source, &bytes).unwrap();

    let info = store.blob_put_file("photos", "p1", &source, Some("image/jpeg")).unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!((info.chunks, info.chunk_size), (3, MIB as u64));
    assert_eq!(info.name.as_deref(), Some("photo.jpg"));
    assert_eq!(info.content_type.as_deref(), Some("image/jpeg"));
    assert!(info.complete && info.id.len() == 64);
    assert_eq!(info.new_chunks, 3);

    // The key holds a small reference, readable without a store.
    let reference = store.get("photos", "p1").unwrap().unwrap();
    assert!(reference.len() < 1024);
    let parsed = masq::blob_parse(&reference).unwrap();
    assert_eq!((parsed.id.as_str(), parsed.size), (info.id.as_str(), info.size));
    assert_eq!(masq::blob_parse(b"not a blob").unwrap_err().kind(), ErrorKind::Invalid);

    // Whole, to a file; a range, to a Vec.
    let copy = dir.join("copy.jpg");
    store.blob_get_file("photos", "p1", &copy, 0, None).unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    let mut range = Vec::new();
    store.blob_get_stream("photos", "p1", MIB as u64 - 10, Some(20), &mut range).unwrap();
    assert_eq!(range, &bytes[MIB - 10..MIB + 10]);
    let mut tail = Vec::new();
    store.blob_get_stream("photos", "p1", bytes.len() as u64 - 5, Some(1000), &mut tail).unwrap();
    assert_eq!(tail, &bytes[bytes.len() - 5..], "a range past the end is cut");

    // The same data again from a stream: no new chunk.
    let again = store.blob_put_stream("photos", "p2", Cursor::new(bytes.clone()), None, Some("again.bin")).unwrap();
    assert_eq!(again.new_chunks, 0, "every chunk was stored already");
    assert_eq!(again.name.as_deref(), Some("again.bin"));
    assert_eq!(store.blob_info("photos", "p2").unwrap().present_chunks, 3);

    // An empty blob.
    let empty = store.blob_put_stream("photos", "empty", io::empty(), None, None).unwrap();
    assert_eq!(empty.size, 0);
    let mut out = Vec::new();
    store.blob_get_stream("photos", "empty", 0, None, &mut out).unwrap();
    assert!(out.is_empty());

    // Errors.
    assert_eq!(store.blob_info("photos", "missing").unwrap_err().kind(), ErrorKind::NotFound);
    store.put("photos", "plain", "value").unwrap();
    assert_eq!(store.blob_info("photos", "plain").unwrap_err().kind(), ErrorKind::Invalid);
    assert_eq!(store.blob_get_file("photos", "plain", dir.join("x"), 0, None).unwrap_err().kind(), ErrorKind::Invalid);
    let e = store.blob_put_file("photos", "p3", dir.join("no such file"), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(store.get("photos", "p3").unwrap().is_none());
    assert_eq!(store.blob_put_file("photos", "p3", &source, Some("a\0b")).unwrap_err().kind(), ErrorKind::Invalid);
}

/// A reader that fails after some bytes.
struct Failing(usize);

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::new(io::ErrorKind::Other, "the camera went away"));
        }
        let n = buf.len().min(self.0);
        buf[..n].fill(7);
        self.0 -= n;
        Ok(n)
    }
}

/// A writer that refuses after some bytes.
struct Full(usize);

impl Write for Full {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0 < buf.len() {
            return Err(io::Error::new(io::ErrorKind::Other, "disk full"));
        }
        self.0 -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn errors_and_panics_in_streams() {
    let dir = TempDir::new("blob-errors");
    let store = open(dir.path(), "sqlite");
    store.put("files", "doc", "old value").unwrap();

    let e = store.blob_put_stream("files", "doc", Failing(3 * MIB / 2), None, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.message().contains("the camera went away"), "{}", e);
    assert_eq!(store.get("files", "doc").unwrap().unwrap(), b"old value", "the key is unchanged");

    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        struct Panicking;
        impl Read for Panicking {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("boom in a reader")
            }
        }
        let _ = store.blob_put_stream("files", "doc", Panicking, None, None);
    }));
    assert!(caught.is_err(), "the reader's panic resumes here");
    assert_eq!(store.get("files", "doc").unwrap().unwrap(), b"old value");

    store.blob_put_stream("files", "big", Cursor::new(data(2 * MIB)), None, None).unwrap();
    let e = store.blob_get_stream("files", "big", 0, None, Full(MIB + 1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.message().contains("disk full"), "{}", e);

    // Collection: replacing the blob leaves its chunks unreferenced.
    store.put("files", "big", "no longer a blob").unwrap();
    let report = store.blob_gc().unwrap();
    assert!(report.chunks_deleted >= 2, "{:?}", report.json);
    assert!(!report.deferred);
}

#[test]
fn a_blob_syncs_to_another_device() {
    let bin = match common::masq_bin() {
        Some(b) => b,
        None => {
            eprintln!("note: no masq CLI (set MASQ_BIN); blob sync test skipped");
            return;
        }
    };
    let relay = common::Relay::start(&bin);
    let dir = TempDir::new("blob-sync");
    let open_relay = |name: &str| {
        Store::open_with(&Config::new().data_dir(dir.join(name)).transport(Plugin::relay(&relay.url))).unwrap()
    };
    let (a, b) = (open_relay("a"), open_relay("b"));
    run_pairing(&a, &b);
    let bytes = data(3 * MIB + 1);
    let info =
        a.blob_put_stream("media", "video", Cursor::new(bytes.clone()), Some("video/mp4"), Some("v.mp4")).unwrap();
    let progress = Arc::new(Mutex::new(Vec::new()));
    let sink = progress.clone();
    b.set_blob_progress(move |id, fetched, size| sink.lock().unwrap().push((id.to_string(), fetched, size))).unwrap();

    a.sync_start().unwrap();
    b.sync_start().unwrap();
    assert!(wait_until(60, || b.blob_info("media", "video").map(|i| i.complete).unwrap_or(false)), "the blob arrived");
    let mut got = Vec::new();
    b.blob_get_stream("media", "video", 0, None, &mut got).unwrap();
    assert_eq!(got, bytes);
    assert!(wait_until(10, || progress.lock().unwrap().iter().any(|(id, f, s)| *id == info.id && f == s)));
    b.clear_blob_progress().unwrap();
    a.sync_stop().unwrap();
    b.sync_stop().unwrap();
    let status = b.sync_status().unwrap();
    assert!(status.json.get("blobs").is_some(), "{}", status.json);
}

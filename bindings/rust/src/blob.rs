//! Blobs: file-sized data written and read without holding it in memory
//! (`masq_blob_*`).

use std::io::{Read, Write};
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr;

use crate::bytes::{c_path, c_string, slice};
use crate::device::parse_library_json;
use crate::error::{check, Error, Result};
use crate::json::Value;
use crate::store::{text_out, Store};
use crate::sys;

/// What a blob reference says (the value a blob's key holds; [`blob_parse`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BlobRef {
    /// The blob's id (its manifest hash, 64 hex digits; the same on every device).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// Content type, when given.
    pub content_type: Option<String>,
    /// Name, when given.
    pub name: Option<String>,
    /// The whole JSON object.
    pub json: Value,
}

/// A blob as this store holds it ([`Store::blob_info`], and what a write returns).
#[derive(Debug, Clone, PartialEq)]
pub struct BlobInfo {
    /// The blob's id (its manifest hash, 64 hex digits; the same on every device).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// Content type, when given.
    pub content_type: Option<String>,
    /// Name, when given.
    pub name: Option<String>,
    /// Every chunk is on this device.
    pub complete: bool,
    /// The chunk list is on this device.
    pub manifest: bool,
    /// Chunks on this device.
    pub present_chunks: u64,
    /// Bytes on this device.
    pub present_bytes: u64,
    /// Chunks still missing.
    pub missing_chunks: u64,
    /// When this device first asked for the contents (Unix ms; 0: not asked).
    pub fetching_since: u64,
    /// A write only: chunks the write added (0 when the store held them all).
    pub new_chunks: u64,
    /// A write only: bytes the write added.
    pub new_bytes: u64,
    /// The whole JSON object.
    pub json: Value,
}

/// What [`Store::blob_gc`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobGcReport {
    /// Chunks kept (still referenced).
    pub chunks_kept: u64,
    /// Bytes kept.
    pub bytes_kept: u64,
    /// Chunks deleted.
    pub chunks_deleted: u64,
    /// Bytes deleted.
    pub bytes_deleted: u64,
    /// Manifests kept.
    pub manifests_kept: u64,
    /// Manifests deleted.
    pub manifests_deleted: u64,
    /// Fetches dropped (their blob is no longer referenced).
    pub fetches_dropped: u64,
    /// Another process was writing a blob, so unreferenced chunks were kept this time.
    pub deferred: bool,
    /// The whole JSON object.
    pub json: Value,
}

fn text(v: &Value, name: &str) -> Option<String> {
    v.get(name).and_then(Value::as_str).map(str::to_string)
}

fn number(v: &Value, name: &str) -> u64 {
    v.get(name).and_then(Value::as_u64).unwrap_or(0)
}

fn boolean(v: &Value, name: &str) -> bool {
    v.get(name).and_then(Value::as_bool).unwrap_or(false)
}

impl BlobRef {
    fn from_json(v: Value) -> BlobRef {
        BlobRef {
            id: text(&v, "id").unwrap_or_default(),
            size: number(&v, "size"),
            chunk_size: number(&v, "chunk_size"),
            chunks: number(&v, "chunks"),
            content_type: text(&v, "content_type"),
            name: text(&v, "name"),
            json: v,
        }
    }
}

impl BlobInfo {
    fn parse(json: &str, what: &str) -> Result<BlobInfo> {
        let v = parse_library_json(json, what)?;
        Ok(BlobInfo {
            id: text(&v, "id").unwrap_or_default(),
            size: number(&v, "size"),
            chunk_size: number(&v, "chunk_size"),
            chunks: number(&v, "chunks"),
            content_type: text(&v, "content_type"),
            name: text(&v, "name"),
            complete: boolean(&v, "complete"),
            manifest: boolean(&v, "manifest"),
            present_chunks: number(&v, "present_chunks"),
            present_bytes: number(&v, "present_bytes"),
            missing_chunks: number(&v, "missing_chunks"),
            fetching_since: number(&v, "fetching_since"),
            new_chunks: number(&v, "new_chunks"),
            new_bytes: number(&v, "new_bytes"),
            json: v,
        })
    }
}

/// Read a blob reference (a value from [`Store::get`] or a watch) without a
/// store. `ErrorKind::Invalid` if the value is not a blob reference.
pub fn blob_parse(value: &[u8]) -> Result<BlobRef> {
    let json = text_out(|out| unsafe { sys::masq_blob_parse(value.as_ptr(), value.len(), out) })?;
    Ok(BlobRef::from_json(parse_library_json(&json, "masq_blob_parse")?))
}

fn length(length: Option<u64>) -> u64 {
    length.unwrap_or(sys::MASQ_BLOB_TO_END)
}

fn optional(text: Option<&str>, what: &str) -> Result<Option<std::ffi::CString>> {
    match text {
        Some(t) => c_string(t, what).map(Some),
        None => Ok(None),
    }
}

fn ptr_of(c: &Option<std::ffi::CString>) -> *const std::os::raw::c_char {
    c.as_ref().map_or(ptr::null(), |c| c.as_ptr())
}

/// A stream callback's state: the reader or writer, the first I/O error it
/// met and a panic caught in it (resumed on the caller's thread).
struct StreamCtx<T> {
    inner: T,
    io_error: Option<std::io::Error>,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

impl<T> StreamCtx<T> {
    /// The call's result: a panic resumes here; an I/O error of ours is
    /// added to the library's message (it reports MASQ_E_IO).
    fn finish(self, status: c_int) -> Result<()> {
        if let Some(payload) = self.panic {
            resume_unwind(payload);
        }
        match (check(status), self.io_error) {
            (Err(e), Some(io)) => Err(Error::new(e.kind(), format!("{}: {}", e.message(), io))),
            (result, _) => result,
        }
    }
}

unsafe extern "C" fn on_blob_read<R: Read>(ctx: *mut c_void, buf: *mut u8, len: usize) -> i64 {
    // SAFETY: ctx is the StreamCtx<R> of blob_put_stream, alive during the
    // call; buf holds len writable bytes during this call.
    let state = &mut *(ctx as *mut StreamCtx<R>);
    if state.panic.is_some() || state.io_error.is_some() {
        return -1;
    }
    if len == 0 {
        return 0;
    }
    let out = std::slice::from_raw_parts_mut(buf, len);
    let reader = &mut state.inner;
    let result = catch_unwind(AssertUnwindSafe(|| loop {
        match reader.read(out) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }));
    match result {
        Ok(Ok(n)) => n.min(len) as i64,
        Ok(Err(e)) => {
            state.io_error = Some(e);
            -1
        }
        Err(payload) => {
            state.panic = Some(payload);
            -1
        }
    }
}

unsafe extern "C" fn on_blob_write<W: Write>(ctx: *mut c_void, data: *const u8, len: usize) -> c_int {
    // SAFETY: ctx is the StreamCtx<W> of blob_get_stream; data valid during this call.
    let state = &mut *(ctx as *mut StreamCtx<W>);
    if state.panic.is_some() || state.io_error.is_some() {
        return 1;
    }
    let data = slice(data, len);
    let writer = &mut state.inner;
    match catch_unwind(AssertUnwindSafe(|| writer.write_all(data))) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            state.io_error = Some(e);
            1
        }
        Err(payload) => {
            state.panic = Some(payload);
            1
        }
    }
}

impl Store {
    /// Write the file at `path` (read 1 MiB at a time) as a blob, and set
    /// `key` in `ns` to its reference in one commit (the key changes only once
    /// every chunk is stored). The blob's name is the file's base name.
    /// `ErrorKind::Io` if the file cannot be read, `TooLarge` over 1 TiB.
    pub fn blob_put_file(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        path: impl AsRef<Path>,
        content_type: Option<&str>,
    ) -> Result<BlobInfo> {
        let ns = c_string(ns, "namespace")?;
        let key = key.as_ref();
        let path = c_path(path.as_ref(), "path")?;
        let content_type = optional(content_type, "content type")?;
        let json = text_out(|out| unsafe {
            sys::masq_blob_put_file(
                self.raw(),
                ns.as_ptr(),
                key.as_ptr(),
                key.len(),
                path.as_ptr(),
                ptr_of(&content_type),
                out,
            )
        })?;
        BlobInfo::parse(&json, "masq_blob_put_file")
    }

    /// Write what `reader` produces (until it returns 0 bytes) as a blob and
    /// set `key` in `ns` to its reference. A read error abandons the write
    /// (`ErrorKind::Io` with the reader's error; the key is unchanged); a
    /// panic in the reader abandons it too and is resumed here.
    pub fn blob_put_stream<R: Read>(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        reader: R,
        content_type: Option<&str>,
        name: Option<&str>,
    ) -> Result<BlobInfo> {
        let ns = c_string(ns, "namespace")?;
        let key = key.as_ref();
        let content_type = optional(content_type, "content type")?;
        let name = optional(name, "name")?;
        let mut state = StreamCtx { inner: reader, io_error: None, panic: None };
        let mut json: *mut std::os::raw::c_char = ptr::null_mut();
        let status = {
            let ctx = &mut state as *mut StreamCtx<R> as *mut c_void;
            // SAFETY: on_blob_read::<R> matches ctx; both live across the
            // call, and the callback runs during it on this thread.
            unsafe {
                sys::masq_blob_put_stream(
                    self.raw(),
                    ns.as_ptr(),
                    key.as_ptr(),
                    key.len(),
                    Some(on_blob_read::<R>),
                    ctx,
                    ptr_of(&content_type),
                    ptr_of(&name),
                    &mut json,
                )
            }
        };
        // The library's message before anything else calls into it.
        let result = state.finish(status);
        // SAFETY: NULL on failure; ours on success.
        let json = unsafe { crate::bytes::take_text(json) };
        result?;
        BlobInfo::parse(&json, "masq_blob_put_stream")
    }

    /// Write bytes `[offset, offset + length)` of the blob `key` references
    /// to the file at `path` (`None`: to the end), atomically (a temporary
    /// file renamed over `path`). `ErrorKind::Unavailable` if chunks of the
    /// range are not on this device yet (the fetch is then asked for).
    pub fn blob_get_file(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        path: impl AsRef<Path>,
        offset: u64,
        length: Option<u64>,
    ) -> Result<()> {
        let ns = c_string(ns, "namespace")?;
        let key = key.as_ref();
        let path = c_path(path.as_ref(), "path")?;
        // SAFETY: valid strings and buffers.
        check(unsafe {
            sys::masq_blob_get_file(
                self.raw(),
                ns.as_ptr(),
                key.as_ptr(),
                key.len(),
                path.as_ptr(),
                offset,
                self::length(length),
            )
        })
    }

    /// Hand bytes `[offset, offset + length)` of the blob `key` references
    /// to `writer`, in order (`None`: to the end). Every chunk of the range
    /// is checked present first (`ErrorKind::Unavailable` otherwise, and the
    /// writer sees nothing). A write error stops it (`ErrorKind::Io` with the
    /// writer's error); a panic in the writer is resumed here.
    pub fn blob_get_stream<W: Write>(
        &self,
        ns: &str,
        key: impl AsRef<[u8]>,
        offset: u64,
        length: Option<u64>,
        writer: W,
    ) -> Result<()> {
        let ns = c_string(ns, "namespace")?;
        let key = key.as_ref();
        let mut state = StreamCtx { inner: writer, io_error: None, panic: None };
        let status = {
            let ctx = &mut state as *mut StreamCtx<W> as *mut c_void;
            // SAFETY: on_blob_write::<W> matches ctx; it lives across the call.
            unsafe {
                sys::masq_blob_get_stream(
                    self.raw(),
                    ns.as_ptr(),
                    key.as_ptr(),
                    key.len(),
                    offset,
                    self::length(length),
                    Some(on_blob_write::<W>),
                    ctx,
                )
            }
        };
        state.finish(status)
    }

    /// The blob `key` references, whether or not its contents are here.
    /// `ErrorKind::NotFound` for an absent key, `Invalid` for a plain value.
    pub fn blob_info(&self, ns: &str, key: impl AsRef<[u8]>) -> Result<BlobInfo> {
        let ns = c_string(ns, "namespace")?;
        let key = key.as_ref();
        let json =
            text_out(|out| unsafe { sys::masq_blob_info(self.raw(), ns.as_ptr(), key.as_ptr(), key.len(), out) })?;
        BlobInfo::parse(&json, "masq_blob_info")
    }

    /// Ask for the contents of the blob `key` references: recorded in the
    /// store and fetched by the running (or next) sync.
    pub fn blob_fetch(&self, ns: &str, key: impl AsRef<[u8]>) -> Result<()> {
        let ns = c_string(ns, "namespace")?;
        let key = key.as_ref();
        // SAFETY: valid strings and buffers.
        check(unsafe { sys::masq_blob_fetch(self.raw(), ns.as_ptr(), key.as_ptr(), key.len()) })
    }

    /// Delete every chunk and manifest no live key references.
    pub fn blob_gc(&self) -> Result<BlobGcReport> {
        let json = text_out(|out| unsafe { sys::masq_blob_gc(self.raw(), out) })?;
        let v = parse_library_json(&json, "masq_blob_gc")?;
        Ok(BlobGcReport {
            chunks_kept: number(&v, "chunks_kept"),
            bytes_kept: number(&v, "bytes_kept"),
            chunks_deleted: number(&v, "chunks_deleted"),
            bytes_deleted: number(&v, "bytes_deleted"),
            manifests_kept: number(&v, "manifests_kept"),
            manifests_deleted: number(&v, "manifests_deleted"),
            fetches_dropped: number(&v, "fetches_dropped"),
            deferred: boolean(&v, "deferred"),
            json: v,
        })
    }
}

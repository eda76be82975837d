/*
 * checksum_vfs.h: a page-checksum VFS shim for SQLite ("masq-cksum").
 *
 * Why: a flipped byte inside a b-tree page (a key, a cell header, a child
 * pointer) does not always make SQLite fail. A lookup can walk to the wrong
 * cell and answer "absent" for a key that exists, silently. With this shim
 * every page of the main database file carries a checksum of its own bytes in
 * its last 8 bytes (SQLite's "reserved bytes" area, which SQLite never uses
 * for data). The checksum is computed whenever a page is written to the main
 * file, and verified whenever a whole page is read back from it; a page whose
 * bytes changed makes the read fail with SQLITE_IOERR_DATA, so the statement
 * fails instead of answering wrongly. Same design as SQLite's own
 * ext/misc/cksumvfs.c (https://sqlite.org/cksumvfs.html), own code, own
 * checksum (see plugins/storage-sqlite/README.md for the on-disk layout).
 *
 * Which files: only a database whose header says "8 reserved bytes per page"
 * (byte 20 of the file header) is checksummed and verified. Any other
 * database opened through the shim is passed through untouched, so old files
 * keep working; masq_cksum_enable() explains how a file gets the 8 bytes.
 * WAL files, rollback journals and temporary files are not wrapped at all:
 * pages reach the main file through a checkpoint (or a commit, in rollback
 * mode), which writes them through the shim and so computes their checksum.
 * The WAL keeps its own frame checksums.
 *
 * Ownership: the shim owns nothing the caller sees, except the report string
 * of masq_cksum_verify_all() (free it with sqlite3_free()). It registers one
 * process-wide sqlite3_vfs object that lives until the process exits (SQLite
 * has no safe point to unregister it while connections may use it).
 *
 * Threads: masq_cksum_register() may be called from any thread, any number of
 * times (the first call does the work, under pthread_once). Each open file
 * belongs to one connection and is used as SQLite uses it (one thread at a
 * time per connection); the shim adds no locks and no shared mutable state.
 * masq_cksum_enable() and masq_cksum_verify_all() use the connection, so call
 * them on the thread that owns the connection (like any sqlite3_* call on a
 * SQLITE_OPEN_NOMUTEX connection).
 *
 * This header does not include <sqlite3.h> (so the Swift module of this
 * target does not re-export SQLite); it only names `struct sqlite3`. Return
 * values are SQLite result codes.
 */
#ifndef MASQ_CHECKSUM_VFS_H
#define MASQ_CHECKSUM_VFS_H

#ifdef __cplusplus
extern "C" {
#endif

struct sqlite3;

/** The name to pass to sqlite3_open_v2() as zVfs: "masq-cksum". */
#define MASQ_CKSUM_VFS_NAME "masq-cksum"

/** How many bytes at the end of each page the checksum occupies (the
 *  database's reserved bytes per page must be exactly this). */
#define MASQ_CKSUM_RESERVE 8

/**
 * Register the VFS "masq-cksum", wrapping the VFS that is the default at the
 * time of the first call (normally "unix"). It is NOT made the default: open
 * with sqlite3_open_v2(path, &db, flags, MASQ_CKSUM_VFS_NAME).
 * Idempotent and thread-safe; returns SQLITE_OK, or the error of the first
 * (failed) attempt, every time (SQLITE_ERROR if there is no default VFS).
 */
int masq_cksum_register(void);

/**
 * Ask for checksums on the main database of `db`, and say whether they are on.
 *
 * Returns 1 if the main database is opened through "masq-cksum" and its pages
 * are (or, for a new empty database, will be) checksummed; 0 otherwise.
 *
 * What it does: it asks SQLite for 8 reserved bytes per page
 * (sqlite3_file_control(db, "main", SQLITE_FCNTL_RESERVE_BYTES, 8)). SQLite
 * applies that at once only to a database that is still empty (no page 1
 * yet); so call it right after sqlite3_open_v2(), BEFORE anything writes the
 * file: before PRAGMA journal_mode=WAL (which writes page 1 of a new file)
 * and before the first CREATE TABLE. PRAGMA page_size may come before or
 * after; both keep the reserve.
 *
 * An existing database made without the reserve stays unchecked (0): its
 * pages are full of data up to the last byte. The request is remembered by
 * this connection, though, and the next VACUUM on it rebuilds every page
 * with 8 reserved bytes. The upgrade path is therefore:
 *
 *     if (!masq_cksum_enable(db)) {
 *         sqlite3_exec(db, "VACUUM", 0, 0, 0);   // rewrites every page
 *         sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", 0, 0, 0);
 *         on = masq_cksum_enable(db);              // now 1
 *     }
 *
 * (VACUUM needs free disk space of about the database's size and blocks
 * other writers while it runs. The plugin's compact() already runs VACUUM
 * and a TRUNCATE checkpoint, so a store opened with masq_cksum_enable()
 * is upgraded by its next compaction.)
 *
 * It runs one tiny read (of page 1) to learn the file's current reserve;
 * call it outside a write transaction of another connection's making, i.e.
 * where a read may wait for the busy timeout like any other.
 */
int masq_cksum_enable(struct sqlite3 *db);

/**
 * Scrub: read every page of the main database file as it is on disk (not
 * from SQLite's cache) and check its checksum. Returns SQLITE_OK if all
 * pages are good, SQLITE_IOERR_DATA if some are not, SQLITE_NOTFOUND if the
 * file has no checksums (reserve != 8), SQLITE_MISUSE if `db` is not opened
 * through "masq-cksum", or the I/O error that stopped it. If `report` is not
 * NULL it receives a string from sqlite3_mprintf() (caller frees it with
 * sqlite3_free()) saying how many pages were checked and which were bad.
 *
 * Pages still in the WAL (not yet checkpointed) are not in the main file and
 * are not checked; run PRAGMA wal_checkpoint first for a full scrub. It is
 * meant for a quiet store: a page that a concurrent checkpoint is rewriting
 * at that moment is re-read once before it is reported.
 */
int masq_cksum_verify_all(struct sqlite3 *db, char **report);

#ifdef __cplusplus
}
#endif

#endif /* MASQ_CHECKSUM_VFS_H */

/*
 * masq.h — the Masq embedding API.
 *
 * Masq keeps an application's data on the user's own devices: per-application
 * namespaces of keys and values in a local store whose storage engine is a
 * plugin chosen by configuration (SQLite by default). Every write carries the
 * metadata sync needs (a hybrid logical clock timestamp, the writing replica's
 * id, tombstones for deletes, a per-replica change log), so paired devices can
 * later converge on the same data.
 *
 * Conventions (they hold for every function below unless it says otherwise):
 *   - Every function returns a status code: MASQ_OK (0) on success or one of
 *     the MASQ_E_* codes. After a failure, masq_last_error() returns a
 *     readable message for it on the same thread. Every function that
 *     returns a status sets this thread's last error, so a success resets it
 *     ("" and MASQ_OK); functions returning void (masq_free, masq_close of
 *     NULL, masq_pair_cancel, ...) and the masq_last_error* functions
 *     themselves leave it as it was.
 *   - Namespaces are NUL-terminated UTF-8 strings, 1..limits.max_namespace_bytes
 *     bytes (default 128), without NUL or control characters; invalid UTF-8 is
 *     MASQ_E_INVALID.
 *   - Keys and values are byte strings given as (pointer, length). Keys are
 *     1..limits.max_key_bytes (default 1024) bytes; values 0..
 *     limits.max_value_bytes (default 1 MiB). Beyond a limit: MASQ_E_TOO_LARGE,
 *     nothing is written. A pointer may be NULL only when its length is 0.
 *   - Memory the library returns to the caller (values, entry arrays, JSON
 *     text) is allocated by the library and released with masq_free(). Pointers
 *     the caller passes in remain owned by the caller and are not retained
 *     after the call returns, unless a function says otherwise.
 *   - A masq_store handle may be used from any number of threads at once;
 *     calls are serialized internally. Functions without a store are thread-safe.
 *   - Failed calls change nothing: a write either commits whole or not at all.
 *
 * Compiles as C11 and C++ (-Wall -Wextra -Werror -pedantic).
 */
#ifndef MASQ_H
#define MASQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                  */

#define MASQ_VERSION_MAJOR 0
#define MASQ_VERSION_MINOR 1
#define MASQ_VERSION_PATCH 0
#define MASQ_VERSION_STRING "0.1.0"
/** MAJOR * 10000 + MINOR * 100 + PATCH, for compile-time comparisons. */
#define MASQ_VERSION_NUMBER 100

/** The library's version string, e.g. "0.1.0". Static storage; never NULL.
 *  Thread-safe. */
const char *masq_version(void);

/** The library's version as MASQ_VERSION_NUMBER computes it, so a program can
 *  check the library it runs against matches the header it was built with.
 *  Thread-safe. */
int masq_version_number(void);

/* ------------------------------------------------------------------------ */
/* Status codes (identical definitions appear in masq_plugin.h)             */

#define MASQ_OK 0
#define MASQ_E_INVALID 1       /* invalid argument: NULL, bad UTF-8, bad flags */
#define MASQ_E_NOT_FOUND 2     /* no such key, entry or object                 */
#define MASQ_E_TOO_LARGE 3     /* beyond a configured limit                    */
#define MASQ_E_CONFIG 4        /* configuration missing, malformed or invalid  */
#define MASQ_E_PLUGIN 5        /* plugin not found, not a plugin, wrong kind   */
#define MASQ_E_ABI 6           /* plugin built for another ABI version         */
#define MASQ_E_IO 7            /* I/O or storage engine failure                */
#define MASQ_E_CORRUPT 8       /* stored data is not in a format we understand */
#define MASQ_E_CLOSED 9        /* the handle was closed or is shutting down    */
#define MASQ_E_BUSY 10         /* resource locked by someone else; retry later */
#define MASQ_E_NOMEM 11        /* out of memory                                */
#define MASQ_E_UNSUPPORTED 12  /* operation not supported by this plugin/build */
#define MASQ_E_DENIED 13       /* not permitted                                */
#define MASQ_E_BAD_SIGNATURE 14 /* signature or authentication tag invalid     */
#define MASQ_E_FUNDS 15        /* wallet: insufficient funds                   */
#define MASQ_E_UNAVAILABLE 16  /* peer, network or service unreachable         */
#define MASQ_E_TIMEOUT 17      /* operation timed out                          */
#define MASQ_E_INTERNAL 18     /* a bug in Masq or a plugin                    */

/** Message explaining the last failed call made by this thread, or "" if the
 *  last call succeeded. Owned by the library; valid until this thread's next
 *  call into the library. Never NULL. Thread-safe (per-thread state). */
const char *masq_last_error(void);

/** Status code of this thread's last call into the library (MASQ_OK if it
 *  succeeded). Thread-safe (per-thread state). */
int masq_last_error_code(void);

/** Symbolic name of a status code, e.g. "MASQ_E_NOT_FOUND"; "MASQ_E_UNKNOWN"
 *  for a code this version does not know. Static storage. Thread-safe. */
const char *masq_status_name(int status);

/** Release memory returned by the library. NULL is allowed. Thread-safe. */
void masq_free(void *ptr);

/* ------------------------------------------------------------------------ */
/* Logging                                                                  */

/* Log levels (identical definitions appear in masq_plugin.h). */
#define MASQ_LOG_ERROR 0
#define MASQ_LOG_WARN 1
#define MASQ_LOG_INFO 2
#define MASQ_LOG_DEBUG 3

/** Receives one log line: the level, the component ("kernel", or a plugin's
 *  "storage:sqlite"), and the message. Both strings are valid only during
 *  the call. Called from any thread; must not call back into the library. */
typedef void (*masq_log_fn)(void *ctx, int level, const char *component,
                            const char *message);

/**
 * Route the library's log lines (and its plugins') with level <= max_level to
 * fn. fn NULL restores the default: lines go to standard error, with the
 * level taken from the MASQ_LOG environment variable (error|warn|info|debug;
 * default warn). Opening a store with a config "log_level" sets the level of
 * standard error's lines (process-wide, unless MASQ_LOG is set) and never
 * replaces or changes a callback installed here. Secrets and stored values
 * are never logged. Thread-safe; a line already being delivered may still
 * reach the previous callback. Returns MASQ_OK, or MASQ_E_INVALID for a
 * level out of range.
 */
int masq_set_log_callback(int max_level, masq_log_fn fn, void *ctx);

/* ------------------------------------------------------------------------ */
/* Opening and closing a store                                              */

/** An open store. Opaque. */
typedef struct masq_store masq_store;

/**
 * Open the store described by the JSON config file at config_path (see
 * docs/CONFIG.md): it names the storage plugin and its options, the data
 * directory, the plugin search path and limits. Relative paths in the file
 * are resolved against the file's directory. The data directory is created
 * (mode 0700) if missing; so is an empty store.
 *
 * On success *store_out receives a handle to close with masq_close().
 * Errors: MASQ_E_INVALID (NULL argument), MASQ_E_CONFIG (file unreadable,
 * malformed JSON, unknown key, bad value), MASQ_E_PLUGIN / MASQ_E_ABI (the
 * storage plugin cannot be found, loaded or validated), MASQ_E_IO,
 * MASQ_E_CORRUPT (existing data in an unknown format). *store_out is set to
 * NULL on failure. Thread-safe.
 */
int masq_open(const char *config_path, masq_store **store_out);

/**
 * Same as masq_open(), with the config given as a JSON document in memory
 * (config_json, NUL-terminated UTF-8). Relative paths are resolved against
 * base_dir, or the current directory when base_dir is NULL. Thread-safe.
 */
int masq_open_config(const char *config_json, const char *base_dir,
                     masq_store **store_out);

/**
 * Close a store: wait for running calls and queued watch callbacks to finish,
 * then close the storage plugin. NULL is allowed (MASQ_OK). After this call
 * the handle is invalid. Must not be called from inside a callback of the
 * same store (returns MASQ_E_BUSY and closes nothing). Returns MASQ_OK, or
 * MASQ_E_IO if the engine reported an error while closing (the handle is
 * released anyway).
 */
int masq_close(masq_store *store);

/** This store's replica id: a random non-zero 64-bit number fixed when the
 *  store was created, carried by every write it makes. Thread-safe. */
int masq_replica_id(masq_store *store, uint64_t *replica_out);

/* ------------------------------------------------------------------------ */
/* Reading and writing                                                      */

/**
 * Set key to value in namespace ns, in a transaction of its own. The write
 * gets a fresh hybrid logical clock timestamp and a change-log entry; watchers
 * see a MASQ_CHANGE_PUT with MASQ_ORIGIN_LOCAL. Thread-safe.
 */
int masq_put(masq_store *store, const char *ns, const uint8_t *key,
             size_t key_len, const uint8_t *value, size_t value_len);

/**
 * Read key in ns. On success *value_out receives a copy of the value (free it
 * with masq_free; for an empty value a non-NULL pointer to zero bytes) and
 * *value_len_out its length. Returns MASQ_E_NOT_FOUND (and sets *value_out to
 * NULL) if the key is absent or deleted. Thread-safe.
 */
int masq_get(masq_store *store, const char *ns, const uint8_t *key,
             size_t key_len, uint8_t **value_out, size_t *value_len_out);

/**
 * Delete key in ns. The record becomes a tombstone (kept so deletes sync)
 * and watchers see MASQ_CHANGE_DELETE. Deleting an absent or already deleted
 * key succeeds and writes nothing. Thread-safe.
 */
int masq_delete(masq_store *store, const char *ns, const uint8_t *key,
                size_t key_len);

/** Called once per live key by masq_list, in ascending bytewise key order.
 *  Pointers are valid only during the call. Return 0 to continue, non-zero
 *  to stop (masq_list then returns MASQ_OK). The callback runs on the
 *  caller's thread, with no lock held: it may call any function of this
 *  library, including writes to the same store. */
typedef int (*masq_list_fn)(void *ctx, const uint8_t *key, size_t key_len,
                            const uint8_t *value, size_t value_len);

/** masq_list flags. */
#define MASQ_LIST_KEYS_ONLY 1u /* value is NULL and value_len 0 in callbacks */

/**
 * Call fn for every live key in ns that starts with prefix (prefix NULL with
 * prefix_len 0 lists the whole namespace). Entries are read in chunks, so the
 * listing is not one snapshot: a key written during the listing may or may
 * not be seen, but every key is seen at most once and in order. Returns
 * MASQ_E_INVALID for unknown flags. Thread-safe.
 */
int masq_list(masq_store *store, const char *ns, const uint8_t *prefix,
              size_t prefix_len, uint32_t flags, masq_list_fn fn, void *ctx);

/** One key/value pair, for masq_get_all and masq_set_all. */
typedef struct masq_entry {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value; /* masq_set_all: NULL (with value_len 0) deletes */
    size_t value_len;
} masq_entry;

/**
 * Read every live key of ns in one consistent snapshot. On success
 * *entries_out points to *count_out entries in ascending key order, all in ONE
 * allocation (the array and the bytes it points to): release it with a single
 * masq_free(*entries_out). An empty namespace gives *entries_out NULL and
 * *count_out 0. Returns MASQ_E_TOO_LARGE if the namespace holds more than
 * limits.max_batch_entries keys (use masq_list). Thread-safe.
 */
int masq_get_all(masq_store *store, const char *ns, masq_entry **entries_out,
                 size_t *count_out);

/** masq_set_all flags. */
#define MASQ_SET_ALL_REPLACE 1u /* also delete every key of ns not in entries */

/**
 * Apply count entries to ns in ONE transaction: each entry with a non-NULL
 * value is put, each with a NULL value is deleted. With MASQ_SET_ALL_REPLACE
 * the namespace afterwards holds exactly the entries given. All or nothing:
 * if any entry is invalid (or beyond a limit) nothing is written and the
 * message names the entry's index. A key given twice: the last one wins.
 * count may be 0 (entries may then be NULL). At most limits.max_batch_entries
 * entries. Thread-safe.
 */
int masq_set_all(masq_store *store, const char *ns, const masq_entry *entries,
                 size_t count, uint32_t flags);

/** Delete every key in ns, in one transaction (tombstones, so it syncs).
 *  Thread-safe. */
int masq_clear(masq_store *store, const char *ns);

/** Called once per namespace by masq_list_namespaces; ns is valid only during
 *  the call. Return 0 to continue, non-zero to stop. Same rules as
 *  masq_list_fn. */
typedef int (*masq_namespace_fn)(void *ctx, const char *ns);

/** Call fn for every namespace holding at least one live key, in ascending
 *  bytewise order of their UTF-8 names ("Zoo" before "apple", "app" before
 *  "apple"). Thread-safe. */
int masq_list_namespaces(masq_store *store, masq_namespace_fn fn, void *ctx);

/* ------------------------------------------------------------------------ */
/* Watching for changes                                                     */

#define MASQ_CHANGE_PUT 1      /* key now holds value                        */
#define MASQ_CHANGE_DELETE 2   /* key was deleted (value is NULL)            */
#define MASQ_CHANGE_CONFLICT 3 /* two devices wrote the key concurrently: value
                                  (NULL if deleted) won, lost_value lost       */

#define MASQ_ORIGIN_LOCAL 1  /* written through this store handle            */
#define MASQ_ORIGIN_REMOTE 2 /* arrived from another replica by sync         */

/** One committed change. Valid only during the callback; copy what you keep.
 *  New members may be appended; check struct_size before reading them. */
typedef struct masq_change {
    uint32_t struct_size;  /* sizeof(masq_change) as the library was built  */
    int kind;              /* MASQ_CHANGE_PUT, _DELETE or _CONFLICT          */
    int origin;            /* MASQ_ORIGIN_LOCAL or MASQ_ORIGIN_REMOTE        */
    const char *ns;        /* namespace (NUL-terminated UTF-8)               */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;  /* NULL for MASQ_CHANGE_DELETE                    */
    size_t value_len;
    uint64_t timestamp;    /* hybrid logical clock timestamp of the write    */
    uint64_t replica;      /* replica id of the writer                       */
    /* MASQ_CHANGE_CONFLICT only (NULL/0/0 otherwise): */
    const uint8_t *lost_value; /* the value that lost; NULL if the loser was a delete */
    size_t lost_value_len;
    int lost_was_deleted;
} masq_change;

/** Receives changes. Called from a library-owned thread (never the writer's),
 *  one change at a time per store, in commit order. It may call any function
 *  of this library except masq_close on the same store. */
typedef void (*masq_watch_fn)(void *ctx, const masq_change *change);

/**
 * Call fn for every change committed after this call returns to keys of ns
 * (NULL: every namespace) starting with prefix (NULL/0: every key). ctx is
 * passed through untouched; the caller keeps it valid until masq_unwatch
 * returns. On success *watch_id_out receives a non-zero id. Thread-safe.
 */
int masq_watch(masq_store *store, const char *ns, const uint8_t *prefix,
               size_t prefix_len, masq_watch_fn fn, void *ctx,
               uint64_t *watch_id_out);

/**
 * Stop a watch. When this returns (from any thread other than the watch
 * callback thread) fn is not running and will not be called again for this
 * id. Called from inside a callback it stops later deliveries. Returns
 * MASQ_E_NOT_FOUND for an unknown id. Thread-safe.
 */
int masq_unwatch(masq_store *store, uint64_t watch_id);

/* ------------------------------------------------------------------------ */
/* Counters                                                                 */

/**
 * Add delta (may be negative) to the counter at key. Counters merge across
 * devices so that concurrent additions all count. A key holding a plain value
 * is MASQ_E_INVALID (and masq_put on a counter key is too); masq_delete
 * resets a counter to 0. masq_get returns a counter's total as decimal text.
 * Thread-safe.
 */
int masq_counter_add(masq_store *store, const char *ns, const uint8_t *key, size_t key_len, int64_t delta);

/** The counter's total into *value_out (0 for an absent key). Thread-safe. */
int masq_counter_get(masq_store *store, const char *ns, const uint8_t *key, size_t key_len, int64_t *value_out);

/* ------------------------------------------------------------------------ */
/* Sync                                                                     */

/**
 * Sync with the paired devices over the config's "transports" (e.g. the
 * relay plugin with option "url"), in the background, until masq_sync_stop
 * or masq_close. Changes from other devices reach masq_watch callbacks with
 * MASQ_ORIGIN_REMOTE. MASQ_E_CONFIG without a transport; MASQ_E_BUSY if
 * already running. Thread-safe.
 */
int masq_sync_start(masq_store *store);

/** Stop background sync (no callback runs after it returns). Thread-safe. */
int masq_sync_stop(masq_store *store);

/** Sync once: catch up with every paired device present in the group's room
 *  on any configured transport, then return (devices that do not show up
 *  within 3 s are not waited for). MASQ_E_UNAVAILABLE when there are paired
 *  devices but none answered (nothing was synced); MASQ_E_TIMEOUT when not
 *  caught up after timeout_seconds, its message naming what held sync back
 *  where anything did (a refused change, a device that cannot store, a
 *  frame too big; a device removed from the group gets no answers).
 *  timeout_seconds: more than 0, at most 86400 (else
 *  MASQ_E_INVALID). Thread-safe. */
int masq_sync_once(masq_store *store, double timeout_seconds);

/** Sync status as JSON: {"running", "connected", "storage_problem" (null,
 *  or in words: the disk holding this store is full), "devices": [{"device_id",
 *  "name", "present", "they_lack", "we_lack", "last_sync", "problem" (what
 *  holds sync with it back, in words, or null)}],
 *  "frames_received", "frames_rejected" (room payloads the kernel refused:
 *  malformed, unknown type, unpaired sender, failing to open),
 *  "transports": [{"plugin", "stats": {counter: n, ...}}] (each transport
 *  plugin's own counters, e.g. the relay plugin's "frames_rejected"),
 *  "namespaces": {"namespaces" (null: all), "exclude"} (what this device
 *  keeps, config "sync"), "blobs": {"mode" ("eager" or "on_demand"),
 *  "fetching": [{"id", "size", "fetched", "missing_chunks", "since" (Unix
 *  ms it was first asked for), "manifest", "problem" (null, or why it does
 *  not progress: e.g. no present device holds it)}], and this run's
 *  "chunks_received", "bytes_received", "chunks_sent", "bytes_sent",
 *  "chunks_rejected" (a wrong SHA-256 or length), "resent"}}.
 *  *json_out is the caller's to masq_free. Thread-safe. */
int masq_sync_status(masq_store *store, char **json_out);

/** Called as commits from a device arrive: what arrived so far and what that
 *  device announced this one still lacks. From a library thread. It may call
 *  any function of this library except masq_close and masq_sync_stop on the
 *  same store, which answer MASQ_E_BUSY there. */
typedef void (*masq_progress_fn)(void *ctx, const char *device_id, uint64_t received, uint64_t remaining);

/** Install (fn non-NULL) or remove a progress callback for this store's sync. */
int masq_sync_set_progress(masq_store *store, masq_progress_fn fn, void *ctx);

/* ------------------------------------------------------------------------ */
/* Plugins                                                                  */

#define MASQ_PLUGIN_KIND_STORAGE 1   /* also defined, identically, by masq_plugin.h */
#define MASQ_PLUGIN_KIND_TRANSPORT 2
#define MASQ_PLUGIN_KIND_WALLET 3

/** What masq_plugins_scan reports about one candidate file. All strings are
 *  valid only during the callback; name, version and description are NULL
 *  when the file could not be read as a plugin. */
typedef struct masq_plugin_info {
    uint32_t struct_size;
    int status;              /* MASQ_OK if the kernel would load it, else why not */
    const char *path;        /* absolute path of the shared object           */
    int kind;                /* MASQ_PLUGIN_KIND_*, or 0 if unknown          */
    const char *name;
    const char *version;
    const char *description;
    uint32_t abi_version;    /* the ABI the plugin was built for (0 unknown) */
    const char *message;     /* why it cannot load; "" when status is MASQ_OK */
} masq_plugin_info;

typedef int (*masq_plugin_info_fn)(void *ctx, const masq_plugin_info *info);

/**
 * Report every plugin file (libmasq_<kind>_<name>.so) on the search path: the
 * config's plugin_path (config_path may be NULL), then MASQ_PLUGIN_PATH
 * (colon-separated), then the install location (<libdir>/masq/plugins and the
 * directory holding libmasq itself). Each file is loaded and validated
 * exactly as masq_open would, and reported with its status; a broken file
 * never stops the scan. fn returns 0 to continue, non-zero to stop.
 * Thread-safe.
 */
int masq_plugins_scan(const char *config_path, masq_plugin_info_fn fn,
                      void *ctx);


/* ------------------------------------------------------------------------ */
/* Encryption at rest                                                       */

/**
 * A store may be protected by a passphrase: a random master key encrypts its
 * values, namespace names, device identity, paired devices and sessions; the
 * passphrase (scrypt) wraps the master key. A protected store opens *locked*:
 * every data call fails with MASQ_E_DENIED ("the store is locked") until
 * masq_unlock succeeds. Record keys and sync metadata stay in clear (see
 * docs/SECURITY.md). Passphrases are byte strings (UTF-8 advised), never
 * retained after the call returns.
 */

/** Unlock with the passphrase. MASQ_E_DENIED for a wrong one (the store stays
 *  locked); MASQ_E_INVALID if the store has no passphrase. On an unlocked
 *  store it re-checks the passphrase. Thread-safe. */
int masq_unlock(masq_store *store, const uint8_t *passphrase, size_t passphrase_len);

/** Forget the keys in memory (they are wiped); data calls fail until unlock.
 *  No-op on an unprotected store. Thread-safe. */
int masq_lock(masq_store *store);

/**
 * Set, change or remove the passphrase.
 *   - unprotected store: old must be NULL, new non-empty: encrypts all data
 *     (one transaction; no clear copy is left in the engine's files);
 *   - protected, unlocked store: old must be the current passphrase
 *     (MASQ_E_DENIED otherwise); a non-empty new re-wraps the master key
 *     (nothing is re-encrypted); new NULL removes protection (data decrypted).
 * A locked store: MASQ_E_DENIED. Thread-safe.
 */
int masq_set_passphrase(masq_store *store, const uint8_t *old_passphrase, size_t old_len,
                        const uint8_t *new_passphrase, size_t new_len);

/** Whether the store has a passphrase, and whether it is locked now
 *  (either out pointer may be NULL). Thread-safe. */
int masq_protection(masq_store *store, int *protected_out, int *locked_out);

/* ------------------------------------------------------------------------ */
/* This device and paired devices                                           */

/** This device as JSON: {"device_id", "name", "signing_key", "agreement_key"
 *  (hex), "fingerprint" (30 digits in groups of 5), "fingerprint_emoji"}.
 *  *json_out is NUL-terminated UTF-8 to release with masq_free. The device
 *  keys are created with the store (Ed25519 and X25519, in <data_dir>/identity,
 *  0600). MASQ_E_DENIED while locked. Thread-safe. */
int masq_device_info(masq_store *store, char **json_out);

/** Paired devices as a JSON array of objects like masq_device_info's plus
 *  "paired_at" (Unix ms). Release with masq_free. Thread-safe. */
int masq_devices(masq_store *store, char **json_out);

/** Set the name other devices see for this one (1..64 bytes UTF-8). */
int masq_set_device_name(masq_store *store, const char *name);

/** Forget a paired device and its session: nothing sealed afterwards is
 *  readable by it. MASQ_E_NOT_FOUND for an unknown id. Thread-safe. */
int masq_device_remove(masq_store *store, const char *device_id);

/** Seal a message for one paired device with its Double Ratchet session (a
 *  fresh key per message). ad (may be NULL/0) is authenticated, not sent.
 *  *message_out (masq_free) holds the message to deliver. Only with a session
 *  made (pairing) or renewed (masq_device_renew_*) since the store was opened:
 *  MASQ_E_DENIED otherwise, because the stored state may be older than the
 *  last message sealed (a data directory restored from a copy) and sealing
 *  with it would reuse a message key. MASQ_E_NOT_FOUND for an unknown device.
 *  (masq_sync_start renews sessions itself.) Thread-safe. */
int masq_seal_for_device(masq_store *store, const char *device_id, const uint8_t *ad, size_t ad_len,
                         const uint8_t *plaintext, size_t plaintext_len, uint8_t **message_out,
                         size_t *message_len_out);

/** Open a message from a paired device. MASQ_E_BAD_SIGNATURE for a tampered,
 *  replayed or foreign message (the session is then unchanged). Thread-safe. */
int masq_open_from_device(masq_store *store, const char *device_id, const uint8_t *ad, size_t ad_len,
                          const uint8_t *message, size_t message_len, uint8_t **plaintext_out,
                          size_t *plaintext_len_out);

/** Renew the session with a paired device: a Noise KK handshake between
 *  the two devices' long-term keys (docs/PROTOCOL.md, "Session renewal"),
 *  carried by the caller like any frame. This side calls _begin and sends
 *  *message_out; the other calls _answer with it and sends back *answer_out;
 *  this side calls _complete with that. The stored session is replaced on
 *  the answering side by _answer, on this side by _complete; the answering
 *  side seals first on the new session. Outputs are freed with masq_free.
 *  Errors: MASQ_E_NOT_FOUND (unknown device, or no renewal waiting at
 *  _complete), MASQ_E_DENIED (_answer: a replayed or too-far-ahead first
 *  message), MASQ_E_BAD_SIGNATURE (a message that does not authenticate; a
 *  forged answer leaves the renewal able to take the genuine one).
 *  Thread-safe. */
int masq_device_renew_begin(masq_store *store, const char *device_id, uint8_t **message_out,
                            size_t *message_len_out);
int masq_device_renew_answer(masq_store *store, const char *device_id, const uint8_t *message,
                             size_t message_len, uint8_t **answer_out, size_t *answer_len_out);
int masq_device_renew_complete(masq_store *store, const char *device_id, const uint8_t *answer,
                               size_t answer_len);

/* ------------------------------------------------------------------------ */
/* Pairing                                                                  */

/**
 * Pairing joins two devices of one user. The offering device makes a
 * single-use link `masq://pair/<room>?via=<endpoint>#<secret>` (the secret,
 * 128 bits, only in the fragment) valid for ttl_seconds; the joining device
 * opens it. The two then exchange frames over any transport, each handed to
 * masq_pairing_receive, until both report paired. The handshake (Noise XXpsk3)
 * authenticates both devices' keys with the secret, so whoever carries the
 * frames can neither read nor impersonate. A wrong secret, an expired or used
 * link fails with MASQ_E_DENIED and stores nothing.
 */
typedef struct masq_pairing masq_pairing;

/** Offer: *link_out (masq_free) is the link to show (also as a QR code, see
 *  masq_qr_pgm); *pairing_out (masq_pairing_free) receives the joiner's frames.
 *  via (may be NULL) names where this device waits. */
int masq_pairing_offer(masq_store *store, const char *via, uint32_t ttl_seconds, char **link_out,
                       masq_pairing **pairing_out);

/** Join: parse the link (MASQ_E_INVALID if damaged) and prepare. Then call
 *  masq_pairing_start for the first frame to send. */
int masq_pairing_join(masq_store *store, const char *link, masq_pairing **pairing_out);

/** The joiner's first frame (masq_free). */
int masq_pairing_start(masq_pairing *pairing, uint8_t **frame_out, size_t *frame_len_out);

/**
 * Hand the peer's frame over. On success *frame_out (masq_free; NULL if there
 * is nothing to send) is the frame to send back, and *paired_out is 1 once
 * this side has stored the other device (masq_pairing_peer then describes
 * it). On failure the status says why and *frame_out, if not NULL, is a
 * refusal frame to send so the other side learns why. Not thread-safe for
 * one pairing handle (call from one thread at a time).
 */
int masq_pairing_receive(masq_pairing *pairing, const uint8_t *frame, size_t frame_len, uint8_t **frame_out,
                         size_t *frame_len_out, int *paired_out);

/** The paired device as JSON (like masq_devices' entries), once paired. */
int masq_pairing_peer(masq_pairing *pairing, char **json_out);

/** Release a pairing handle. NULL allowed. */
void masq_pairing_free(masq_pairing *pairing);

/** A QR code of text as a binary PGM image (*image_out, masq_free), scale
 *  pixels per module, with the quiet zone scanners need. Thread-safe. */
int masq_qr_pgm(const char *text, uint32_t scale, uint8_t **image_out, size_t *image_len_out);

/* ------------------------------------------------------------------------ */
/* Pairing through a relay (the library carries the frames)                 */

/**
 * The same pairing as above, with the frames carried by the library through
 * a relay: the offering device gets its link at once and waits in the
 * background; the joining device opens the link. Each runs as a task on a
 * library thread, which ends once: paired, expired, failed or cancelled.
 * The relay is `relay_url` (ws:// or wss://) or, when NULL, the url of the
 * store's configured relay transport (MASQ_E_CONFIG if there is none). The
 * new device is stored before the task ends with MASQ_OK; a running
 * masq_sync_start service syncs with it from then on. Pairing through an
 * explicit relay_url does not change the store's configuration.
 */
typedef struct masq_pairing_task masq_pairing_task;

/** Called once when a task ends, from the task's own thread: status MASQ_OK
 *  with the paired device as JSON (like masq_devices' entries), or an error
 *  status (MASQ_E_TIMEOUT: the link expired or nobody answered;
 *  MASQ_E_CLOSED: cancelled; MASQ_E_DENIED: a wrong secret or used link;
 *  MASQ_E_UNAVAILABLE: the relay cannot be reached) with a message;
 *  device_json is NULL then. Both strings are valid during the call only.
 *  The callback must not call masq_pair_free on its own task. */
typedef void (*masq_pairing_done_fn)(void *ctx, int status, const char *message, const char *device_json);

/** Offer a pairing through a relay. *link_out (masq_free) is the link to
 *  show, also as a QR code (masq_qr_pgm); the task waits up to ttl_seconds
 *  (0: the default, 10 minutes) for a device to join; a failed attempt
 *  (wrong secret) is refused and the wait goes on. done (may be NULL; then
 *  use masq_pair_wait) is called with ctx when the task ends. *task_out
 *  (masq_pair_free) is the task. Errors before the task starts (a relay
 *  that refuses the connection, NULL arguments, a locked store) are
 *  returned here and done is not called. Thread-safe. */
int masq_pair_offer(masq_store *store, const char *relay_url, uint32_t ttl_seconds, masq_pairing_done_fn done,
                    void *ctx, char **link_out, masq_pairing_task **task_out);

/** Join from a link another device offers (MASQ_E_INVALID for a damaged or
 *  foreign link, checked here). The task talks to the link's relay for up
 *  to timeout_seconds (0: 60 s). done and *task_out as for masq_pair_offer.
 *  Thread-safe. */
int masq_pair_join(masq_store *store, const char *link, uint32_t timeout_seconds, masq_pairing_done_fn done,
                   void *ctx, masq_pairing_task **task_out);

/** Wait up to timeout_ms (0: until it ends) for the task to end. Returns the
 *  task's status, with *device_json_out (masq_free; may be NULL if unwanted)
 *  the paired device on MASQ_OK, and masq_last_error's message the task's
 *  message otherwise; MASQ_E_BUSY if it is still running. Thread-safe. */
int masq_pair_wait(masq_pairing_task *task, uint32_t timeout_ms, char **device_json_out);

/** Ask the task to stop: it ends soon with MASQ_E_CLOSED (unless it ended
 *  already). NULL allowed. Thread-safe. */
void masq_pair_cancel(masq_pairing_task *task);

/** Cancel the task if it runs, wait until it ended (its done callback has
 *  returned) and release it. NULL allowed. Not from the task's own done
 *  callback. */
void masq_pair_free(masq_pairing_task *task);

/* ------------------------------------------------------------------------ */
/* Blobs                                                                    */

/*
 * A blob is file-sized data (a photo, a video, a document) written and read
 * without holding it in memory, up to 1 TiB. It is cut into chunks of 1 MiB
 * (the last shorter), each stored once per store under the SHA-256 of its
 * content — writing the same data twice adds no chunk — and sealed at rest
 * like values when the store has a passphrase. An ordinary key holds a small
 * reference to the blob: the key merges, conflicts, is deleted and syncs
 * exactly like any value, and masq_get returns the reference's bytes
 * (masq_blob_parse reads them; masq_watch reports it like any value).
 * Sync carries the chunks separately: a device that learns of a blob asks
 * the devices present for its chunks (all of them at once by default, or only
 * when asked with the config's "sync": {"blobs": "on_demand"}), checks each
 * one's SHA-256, keeps what arrived across restarts, and reports progress
 * (masq_blob_set_progress, masq_sync_status "blobs"). Chunks no live key
 * references any more are deleted by masq_blob_gc and every 10 minutes while
 * sync runs. See docs/STORAGE-FORMAT.md and docs/PROTOCOL.md ("Blobs").
 *
 * Blob info is a JSON object: {"id" (the blob's manifest hash, 64 hex
 * digits: the same on every device, as in progress callbacks), "size",
 * "chunk_size", "chunks", "content_type" and "name" (null when not given),
 * "complete" (every chunk is on this device), "manifest" (the chunk list is
 * here), "present_chunks", "present_bytes", "missing_chunks",
 * "fetching_since" (Unix ms this device first asked for the contents; 0:
 * not asked), "new_chunks", "new_bytes" (a write only: chunks the write
 * added; 0 when the store held them all already)}.
 *
 * Every function below takes the same ns, key, key_len as masq_put; returns
 * MASQ_E_DENIED while the store is locked; sets *..._out to NULL on failure
 * (strings returned are the caller's to masq_free); and is thread-safe. A
 * callback runs on the calling thread, during the call, without any library
 * lock held: it may call other functions of the same store (not masq_close).
 */

/** masq_blob_get_*: length meaning "up to the end of the blob". */
#define MASQ_BLOB_TO_END UINT64_MAX

/** Produces a blob's bytes for masq_blob_put_stream: fill buf with up to
 *  len bytes and return how many (fewer is fine; 0 means the end), or a
 *  negative number for an error (the write is abandoned). */
typedef int64_t (*masq_blob_read_fn)(void *ctx, uint8_t *buf, size_t len);

/** Receives a blob's bytes from masq_blob_get_stream, in order: return 0 to
 *  go on, anything else to stop (the call then returns MASQ_E_IO). data is
 *  valid only during the call. */
typedef int (*masq_blob_write_fn)(void *ctx, const uint8_t *data, size_t len);

/**
 * Write the file at path (read 1 MiB at a time) as a blob, and set key in ns
 * to its reference in one commit. The blob's name is the file's base name;
 * content_type (e.g. "image/jpeg", at most 255 bytes) may be NULL.
 * info_json_out may be NULL; otherwise it receives the blob info (see
 * above). The key changes only once every chunk is stored: on any failure it
 * keeps its old value, and chunks already written are deleted by the next
 * collection. Errors: MASQ_E_INVALID (NULL or bad arguments), MASQ_E_IO (the
 * file cannot be opened or read: the message names it and the byte where
 * reading failed), MASQ_E_TOO_LARGE (over 1 TiB), and those of masq_put.
 */
int masq_blob_put_file(masq_store *store, const char *ns, const uint8_t *key, size_t key_len,
                       const char *path, const char *content_type, char **info_json_out);

/**
 * The same from a stream: fn(ctx, buf, len) is called until it returns 0.
 * name (at most 255 bytes) and content_type may be NULL. A negative return
 * from fn abandons the write (MASQ_E_IO, the key unchanged, nothing half
 * written referenced).
 */
int masq_blob_put_stream(masq_store *store, const char *ns, const uint8_t *key, size_t key_len,
                         masq_blob_read_fn fn, void *ctx, const char *content_type, const char *name,
                         char **info_json_out);

/**
 * Write bytes [offset, offset + length) of the blob key references to the
 * file at path (length MASQ_BLOB_TO_END: to the end; a range past the end
 * is cut at the end). The file is written beside path under a temporary
 * name and renamed over path once complete, so a failure leaves path as it
 * was. Errors: MASQ_E_NOT_FOUND (no such key), MASQ_E_INVALID (the key
 * holds an ordinary value; offset past the end), MASQ_E_UNAVAILABLE (some
 * chunks of the range are not on this device yet: the message says how many
 * and the fetch is asked for — with on-demand fetching, this read starts it;
 * nothing is written), MASQ_E_CORRUPT (a stored chunk fails its SHA-256),
 * MASQ_E_IO (path cannot be written).
 */
int masq_blob_get_file(masq_store *store, const char *ns, const uint8_t *key, size_t key_len,
                       const char *path, uint64_t offset, uint64_t length);

/**
 * The same to a stream: fn(ctx, data, len) receives the range in order, in
 * pieces of at most a chunk. Every chunk of the range is checked present
 * before the first call (MASQ_E_UNAVAILABLE otherwise: fn is never called).
 */
int masq_blob_get_stream(masq_store *store, const char *ns, const uint8_t *key, size_t key_len,
                         uint64_t offset, uint64_t length, masq_blob_write_fn fn, void *ctx);

/** The blob info of the blob key references (*json_out, masq_free).
 *  MASQ_E_NOT_FOUND for an absent key, MASQ_E_INVALID for one holding an
 *  ordinary value. Works whether or not the contents are here. */
int masq_blob_info(masq_store *store, const char *ns, const uint8_t *key, size_t key_len, char **json_out);

/** Read a blob reference (a value from masq_get or a watch) without a store:
 *  *json_out (masq_free) receives {"id", "size", "chunk_size", "chunks",
 *  "content_type", "name"}. MASQ_E_INVALID if value is not a blob reference
 *  (or one of an unknown version). */
int masq_blob_parse(const uint8_t *value, size_t value_len, char **json_out);

/** Ask for the contents of the blob key references: recorded in the store
 *  (so it survives restarts) and fetched by the running sync, or by the next
 *  one. MASQ_OK at once, also when the blob is complete already; follow it
 *  with masq_blob_info or the progress callback. MASQ_E_NOT_FOUND,
 *  MASQ_E_INVALID as masq_blob_info. */
int masq_blob_fetch(masq_store *store, const char *ns, const uint8_t *key, size_t key_len);

/** Delete every chunk and manifest no live key references (never those of
 *  a blob being written or read, nor of one being fetched while a key
 *  references it). report_json_out may be NULL; otherwise it receives
 *  {"chunks_kept", "bytes_kept", "chunks_deleted", "bytes_deleted",
 *  "manifests_kept", "manifests_deleted", "fetches_dropped", "deferred"
 *  (true: another process is writing a blob, so unreferenced chunks were
 *  kept this time)}. */
int masq_blob_gc(masq_store *store, char **report_json_out);

/** Called as a blob's chunks arrive by sync: its id (as in blob info),
 *  bytes on this device and the blob's size (fetched == size: complete).
 *  From a library thread; keep it short, and do not stop sync from it. */
typedef void (*masq_blob_progress_fn)(void *ctx, const char *blob_id, uint64_t fetched, uint64_t size);

/** Install (fn non-NULL) or remove the blob progress callback. ctx must stay
 *  valid until the callback is removed or the store closed. */
int masq_blob_set_progress(masq_store *store, masq_blob_progress_fn fn, void *ctx);

/* ------------------------------------------------------------------------ */
/* Crypto sessions                                                          */

/**
 * A session between two parties who carry their own frames: a Noise
 * handshake (25519 / ChaCha20-Poly1305 / SHA-256) that authenticates both
 * static X25519 keys (and a pre-shared key for *psk patterns), then a Double
 * Ratchet seeded from it so every message has its own key (forward secrecy,
 * post-compromise recovery, out-of-order delivery with a bounded store of
 * skipped keys, replays rejected). The handshake *responder* sends the first
 * ratchet message. A session handle is not thread-safe: use it from one
 * thread at a time.
 */
typedef struct masq_session masq_session;

#define MASQ_ROLE_INITIATOR 1
#define MASQ_ROLE_RESPONDER 2

#define MASQ_SESSION_HANDSHAKING 1
#define MASQ_SESSION_ESTABLISHED 2
#define MASQ_SESSION_FAILED 3

typedef struct masq_session_options {
    uint32_t struct_size;       /* sizeof(masq_session_options) */
    const char *pattern;        /* "NN", "KK", "IK", "XX", "NNpsk0", "XXpsk3", "IKpsk2" */
    int role;                   /* MASQ_ROLE_INITIATOR or MASQ_ROLE_RESPONDER */
    const uint8_t *prologue;    /* bound into the handshake; may be NULL */
    size_t prologue_len;
    const uint8_t *static_key;  /* 32-byte X25519 private key, or NULL: the store's device key */
    const uint8_t *remote_static; /* 32 bytes when the pattern knows the peer in advance (KK, IK) */
    size_t remote_static_len;
    const uint8_t *psk;         /* 32 bytes for the psk patterns */
    size_t psk_len;
} masq_session_options;

/** Create a session. store may be NULL when options->static_key is given.
 *  MASQ_E_INVALID for an unknown pattern or missing/ill-sized keys. */
int masq_session_new(masq_store *store, const masq_session_options *options, masq_session **session_out);

/** Write the next handshake message carrying payload (may be NULL/0; it is
 *  encrypted once the pattern allows). *message_out: masq_free. */
int masq_session_write_handshake(masq_session *session, const uint8_t *payload, size_t payload_len,
                                 uint8_t **message_out, size_t *message_len_out);

/** Read the peer's handshake message; *payload_out (masq_free) is its payload.
 *  Any failure (MASQ_E_BAD_SIGNATURE for a wrong key or PSK, MASQ_E_INVALID
 *  for a malformed message) ends the session (state MASQ_SESSION_FAILED). */
int masq_session_read_handshake(masq_session *session, const uint8_t *message, size_t message_len,
                                uint8_t **payload_out, size_t *payload_len_out);

/** State (MASQ_SESSION_*), whether this side writes the next handshake
 *  message, and whether it may seal (any out pointer may be NULL). */
int masq_session_status(masq_session *session, int *state_out, int *write_next_out, int *can_send_out);

/** Seal one message (established sessions). *message_out: masq_free. */
int masq_session_seal(masq_session *session, const uint8_t *ad, size_t ad_len, const uint8_t *plaintext,
                      size_t plaintext_len, uint8_t **message_out, size_t *message_len_out);

/** Open one message. MASQ_E_BAD_SIGNATURE if tampered, replayed or not for
 *  this session; the session is then unchanged. *plaintext_out: masq_free. */
int masq_session_open(masq_session *session, const uint8_t *ad, size_t ad_len, const uint8_t *message,
                      size_t message_len, uint8_t **plaintext_out, size_t *plaintext_len_out);

/** An established session's state as bytes (*state_out: masq_free), to
 *  resume with masq_session_load after a restart. The bytes are secret: keep
 *  them encrypted (sessions with paired devices are kept by the store). */
int masq_session_save(masq_session *session, uint8_t **state_out, size_t *state_len_out);

/** Resume a saved session. MASQ_E_INVALID for damaged state. */
int masq_session_load(const uint8_t *state, size_t state_len, masq_session **session_out);

/** The peer's static X25519 key (32 bytes into key_out) once authenticated. */
int masq_session_peer_key(masq_session *session, uint8_t key_out[32]);

/** The peer's fingerprint, "ddddd ddddd ddddd ddddd ddddd ddddd" (the same
 *  digits `masq devices` shows for that device). *text_out: masq_free. */
int masq_session_peer_fingerprint(masq_session *session, char **text_out);

/** Release a session (its keys are wiped). NULL allowed. */
void masq_session_free(masq_session *session);

/* ------------------------------------------------------------------------ */
/* Backup and restore                                                       */

/**
 * A backup is one file holding everything a store keeps — its records,
 * change log, devices, sessions, shares (sealed parts stay sealed) and the
 * device identity (and keyring, for a store with a passphrase) — taken in
 * one transaction of the storage engine, so it is consistent even while
 * other processes write to the same store (they wait for it). The file is
 * encrypted in authenticated chunks under a random key, wrapped either by a
 * passphrase (scrypt, the config's security.scrypt_log_n) or by a random
 * 256-bit recovery key the library makes and returns once as text
 * (56 characters in groups of 4, e.g. "7KQ2-…"); truncation, reordering,
 * tampering and a wrong key are each detected (format: docs/BACKUP.md).
 *
 * A restore rebuilds the store in the data directory of a config, which
 * must not exist or be empty (MASQ_E_INVALID otherwise: nothing is ever
 * overwritten). It writes into a temporary directory beside it and renames
 * it into place only once the whole file authenticated, so a failed
 * restore leaves nothing behind. The restored store is the same device
 * (same keys, same paired devices): open it with masq_open (and masq_unlock
 * with the passphrase it had, if it had one). The first time it is open and
 * unlocked it continues under a new replica id, so it never writes under
 * the id of the copy's origin, and sync takes back from the other devices
 * what was written after the backup (nothing is lost, nothing deleted comes
 * back). It seals nothing for another device before renewing that session
 * (sync does it; masq_seal_for_device refuses until masq_device_renew_*),
 * so no message key is ever used twice.
 *
 * An export writes every live key as one line of JSON with base64 key and
 * value (docs/EXPORT.md): an open format to take the data elsewhere. It is
 * not a backup (no history, devices or keys) and is written in clear.
 *
 * Paths are UTF-8 file names. Secrets are byte strings, never retained.
 * Every function below is thread-safe.
 */

/**
 * Write a backup of store to path, encrypted under passphrase (non-empty).
 * path must not exist (MASQ_E_INVALID): the file appears whole (written
 * aside, then renamed) or not at all. A locked store can be backed up.
 * Errors: MASQ_E_INVALID (NULL or empty argument, path exists), MASQ_E_IO,
 * MASQ_E_BUSY (another process held the store's write lock too long).
 */
int masq_backup(masq_store *store, const char *path, const uint8_t *passphrase, size_t passphrase_len);

/**
 * Same as masq_backup, encrypted under a new random recovery key returned in
 * *recovery_key_out (NUL-terminated text, masq_free; NULL on failure). Show
 * it to the user once: it is stored nowhere, and without it the backup
 * cannot be opened.
 */
int masq_backup_with_recovery_key(masq_store *store, const char *path, char **recovery_key_out);

/**
 * What a backup file says about itself before any key is given, as JSON in
 * *json_out (masq_free): {"format": 1, "key": "passphrase" or
 * "recovery_key", "chunk_bytes"}. Errors: MASQ_E_NOT_FOUND (no such file),
 * MASQ_E_CORRUPT (not a Masq backup; truncated or damaged header),
 * MASQ_E_UNSUPPORTED (a format version this library does not read).
 */
int masq_backup_info(const char *path, char **json_out);

/**
 * Decrypt and check a whole backup without writing anything. secret is the
 * backup's passphrase, or its recovery key as text (spaces, dashes and case
 * do not matter). json_out may be NULL; otherwise it receives the backup's
 * manifest (masq_free): {"format", "created_at" (Unix ms), "masq_version",
 * "replica", "device_id", "device_name" (null when unknown), "protected"
 * (the store had a passphrase), "storage", "entries", "files", "config"
 * (the store's config as it was, JSON text)}.
 * Errors, also those of masq_restore: MASQ_E_DENIED (wrong passphrase or
 * recovery key), MASQ_E_INVALID (the recovery key is mistyped or not one),
 * MASQ_E_BAD_SIGNATURE (a chunk does not authenticate: tampered, or chunks
 * reordered), MASQ_E_CORRUPT (truncated, damaged, not a backup),
 * MASQ_E_UNSUPPORTED (another format version), MASQ_E_NOT_FOUND, MASQ_E_IO.
 */
int masq_backup_verify(const char *path, const uint8_t *secret, size_t secret_len, char **json_out);

/**
 * Restore the backup at backup_path into the store that the config file at
 * config_path describes (its data directory must not exist or be empty).
 * secret: as masq_backup_verify. The storage plugin may differ from the
 * backed-up store's; it must be persistent (MASQ_E_UNSUPPORTED for
 * "memory"), and its options must not name absolute paths (MASQ_E_CONFIG).
 * Errors: those of masq_backup_verify, MASQ_E_INVALID (NULL argument; the
 * data directory is not empty), MASQ_E_CONFIG, MASQ_E_PLUGIN. On any error
 * nothing is left in the data directory.
 */
int masq_restore(const char *config_path, const char *backup_path, const uint8_t *secret, size_t secret_len);

/** Same as masq_restore, with the config as a JSON document in memory
 *  (relative paths taken from base_dir, or the working directory when NULL),
 *  as masq_open_config. */
int masq_restore_config(const char *config_json, const char *base_dir, const char *backup_path,
                        const uint8_t *secret, size_t secret_len);

/**
 * Export every live key of every namespace to path as JSON lines
 * (docs/EXPORT.md): a header line {"masq_export": 1, ...}, one line per key
 * {"ns", "key_b64", "value_b64", "ts" (Unix ms), "hlc", "replica"
 * [, "counter": true]}, and a last line {"masq_export_end": true,
 * "records": N}; from one consistent snapshot, mode 0600, written aside
 * and renamed. Values are in clear. path must not exist (MASQ_E_INVALID).
 * MASQ_E_DENIED while the store is locked.
 */
int masq_export(masq_store *store, const char *path);

/* ------------------------------------------------------------------------ */
/* Sharing with other people                                                */

/**
 * A namespace may be shared with another person (not another device of the
 * same user) through Connectoid mailbox services (docs/CONNECTOID.md): the
 * owner makes a single-use link and sends it through any messenger, the
 * other person accepts it in their own store, and from then on the two
 * stores exchange the namespace's records, signed and sealed, through the
 * services of the config's "sharing" section. Each side keeps a nickname
 * for the other person (its own; never sent) and, once the other side has
 * answered, a fingerprint over both sides' keys to compare out of band,
 * as digits and emoji like a device's: a different fingerprint on the two
 * screens means someone else used the link.
 *
 * A share is described by a JSON object: {"id" (the same on both sides),
 * "namespace" (the local one; null until the owner answers a link accepted
 * here), "role" ("owner": shared by this store; "guest": accepted here),
 * "access" ("read-write" or "read-only"), "status" ("offered": nobody has
 * accepted the link yet; "claimed": accepted here, waiting for the owner;
 * "active"; "intercepted": someone else used the link first), "nickname"
 * (null if none), "fingerprint" (30 digits in groups of 5) and
 * "fingerprint_emoji" (both null until the other side answered),
 * "created_at" and "last_heard_at" (Unix ms; 0: never), "refused" (messages
 * refused: forged, replayed or beyond the share's rights), "warnings" (an
 * array of strings for the user)}. A share the other side ended is deleted.
 *
 * Messages travel only while sharing runs (masq_share_sync_start, or
 * masq_share_sync_once), independently of masq_sync_start. Shares and their
 * keys live in the store (sealed when it has a passphrase): every function
 * below fails with MASQ_E_DENIED while the store is locked. Nicknames are
 * 1..64 bytes of UTF-8 without control characters or bidirectional
 * overrides; share ids are the "id" of a share object, whole. Strings returned in *link_out and *json_out are
 * NUL-terminated UTF-8 allocated by the library (release with masq_free) and
 * are set to NULL on failure; on failure nothing is stored or changed. Every
 * function below is thread-safe.
 */

/* masq_share_create and masq_share_accept flags. */
#define MASQ_SHARE_READ_ONLY 1u /* create: the other person may read, not write  */
#define MASQ_SHARE_MERGE 2u     /* accept: merge into the existing namespace as_ns */

/**
 * Share namespace ns with another person, whom this store calls nickname.
 * *link_out receives the single-use link to send them (show it also as a QR
 * code: masq_qr_pgm); it names the config's sharing.services. base_url
 * (NULL: "masq://share/") is the page the link opens, e.g. an app's web
 * page; the connectoid= parameter and the #secret are appended to it.
 * json_out may be NULL; otherwise it receives the new share (status
 * "offered"). Everything in ns is shared, including what is written later;
 * ns need not exist yet. Errors: MASQ_E_INVALID (NULL ns, nickname or
 * link_out; a bad namespace, nickname or base_url; unknown flags,
 * MASQ_SHARE_MERGE included), MASQ_E_CONFIG (no sharing service in the
 * config), MASQ_E_DENIED (locked).
 */
int masq_share_create(masq_store *store, const char *ns, const char *nickname, uint32_t flags,
                      const char *base_url, char **link_out, char **json_out);

/**
 * Accept another person's link, calling them nickname. The share lands in
 * namespace as_ns, which must not exist yet (with MASQ_SHARE_MERGE: an
 * existing namespace, whose keys are then sent to the other person and
 * merged with theirs), or, with as_ns NULL, in "shared:" + the owner's name
 * for it + ":" + the share's id once the owner answers (never a namespace
 * that exists here). The claim goes out while sharing runs. json_out may be
 * NULL; otherwise it receives the share (status "claimed"). Errors:
 * MASQ_E_INVALID (NULL link or nickname; a malformed link, a link of
 * another kind such as a pairing link, or one without its #secret; this
 * store's own link; as_ns exists and MASQ_SHARE_MERGE is not given;
 * MASQ_SHARE_MERGE without as_ns; unknown flags, MASQ_SHARE_READ_ONLY
 * included), MASQ_E_DENIED (this link was already accepted here: a link
 * works once; locked), MASQ_E_BUSY (as_ns holds another share).
 */
int masq_share_accept(masq_store *store, const char *link, const char *nickname, const char *as_ns,
                      uint32_t flags, char **json_out);

/** Every share of this store, oldest first, as a JSON array of share
 *  objects in *json_out. */
int masq_shares(masq_store *store, char **json_out);

/** One share as a JSON object in *json_out. MASQ_E_NOT_FOUND for an unknown
 *  id; MASQ_E_INVALID for a NULL one. */
int masq_share_info(masq_store *store, const char *share_id, char **json_out);

/** Change the nickname this store has for the other person of a share.
 *  MASQ_E_NOT_FOUND for an unknown id; MASQ_E_INVALID for a NULL id or a bad
 *  nickname. */
int masq_share_set_nickname(masq_store *store, const char *share_id, const char *nickname);

/**
 * End a share: the other side is told, through the running sharing service
 * or one started for this call (if none can start, only this side ends),
 * and this store deletes the share's keys. The data stays on both sides, as
 * an ordinary namespace; later changes no longer travel. MASQ_E_NOT_FOUND
 * for an unknown id; MASQ_E_INVALID for a NULL one.
 */
int masq_unshare(masq_store *store, const char *share_id);

/**
 * Run sharing in the background until masq_share_sync_stop or masq_close:
 * poll this store's mailboxes through the config's sharing.transport (the
 * "connectoid" plugin unless configured otherwise), answer claims, send and
 * merge records, resend what is not acknowledged. Changes the other person
 * makes reach masq_watch callbacks with MASQ_ORIGIN_REMOTE. MASQ_E_BUSY if
 * already running; MASQ_E_PLUGIN / MASQ_E_CONFIG if the transport cannot
 * be loaded or refuses its options.
 */
int masq_share_sync_start(masq_store *store);

/** Stop background sharing; it sends nothing after this returns. MASQ_OK if
 *  it was not running. */
int masq_share_sync_stop(masq_store *store);

/** Run sharing (or let the background sharing run) until nothing this store
 *  sent waits for an answer — every claim answered, every batch
 *  acknowledged — after at least a second and a half of polling.
 *  MASQ_E_TIMEOUT after timeout_seconds (0 < timeout <= 86400; else
 *  MASQ_E_INVALID), MASQ_E_PLUGIN / MASQ_E_CONFIG as masq_share_sync_start. */
int masq_share_sync_once(masq_store *store, double timeout_seconds);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MASQ_H */

/*
 * masq_plugin.h — the contract between the Masq kernel and its plugins.
 *
 * A Masq plugin is a shared object that exports exactly one function,
 * masq_plugin_entry(), returning a descriptor. The descriptor names the
 * plugin's kind (storage, transport or wallet), its name, its own version,
 * the plugin ABI version it was built for, and a table of functions (the
 * "vtable") for that kind. The kernel hands every plugin instance a host
 * table (logging, error reporting, clocks, secure random bytes and, for
 * transports, frame delivery) so that a plugin never links the kernel.
 *
 * This header is self-contained: a third party writes a plugin in plain C
 * (C11) against this file alone. See docs/WRITING-A-PLUGIN.md and the
 * reference plugin plugins/storage-memory/.
 *
 * Compatibility rules (modelled on SQLite's VFS iVersion and OpenSSL 3
 * provider dispatch tables):
 *   - MASQ_PLUGIN_ABI_VERSION changes only for incompatible changes. The
 *     kernel refuses, with a clear error and without calling anything else
 *     in it, a plugin whose descriptor carries a different ABI version.
 *   - Every struct the two sides exchange starts with `struct_size`, set to
 *     sizeof(the struct) as the side that fills it was compiled. New members
 *     are only ever appended; a reader checks struct_size before touching a
 *     member, so old plugins keep working with newer kernels and vice versa.
 *   - Members documented "required" must be non-NULL; the kernel checks and
 *     refuses the plugin otherwise. "Optional" members may be NULL.
 *
 * Conventions:
 *   - Byte strings are (pointer, length) pairs; text is NUL-terminated UTF-8.
 *   - Every function that can fail returns a status code (MASQ_OK or a
 *     MASQ_E_* value below). A plugin explains a failure by calling
 *     host->error(host, status, "message") and returning its result.
 *   - Memory a plugin returns to the kernel is always handed over through a
 *     sink callback (masq_bytes_sink) while the plugin still owns it; the
 *     kernel copies what it needs. Neither side ever frees the other's memory.
 *   - Threads: the kernel never calls into one storage instance from two
 *     threads at once (calls are serialized, though not always from the same
 *     thread). Transport and wallet instances may be called from any thread,
 *     concurrently; host-table functions may be called from any thread.
 */
#ifndef MASQ_PLUGIN_H
#define MASQ_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Status codes. Identical definitions appear in masq.h; a test compiles both
 * headers together, so any drift between the two is a compile error.       */
#define MASQ_OK 0
#define MASQ_E_INVALID 1       /* invalid argument: NULL, bad UTF-8, bad flags */
#define MASQ_E_NOT_FOUND 2     /* no such key, entry or object                 */
#define MASQ_E_TOO_LARGE 3     /* beyond a configured limit                    */
#define MASQ_E_CONFIG 4        /* configuration missing, malformed or invalid  */
#define MASQ_E_PLUGIN 5        /* plugin not found, not a plugin, wrong kind   */
#define MASQ_E_ABI 6           /* plugin built for another ABI version, or the
                                  host table lacks a member it calls          */
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

/* ------------------------------------------------------------------------ */
/* Versioning and the entry point                                           */

/** ABI version of this header. A kernel loads only plugins whose descriptor
 *  carries exactly this value. */
#define MASQ_PLUGIN_ABI_VERSION 1

/** Name of the one symbol every plugin exports. */
#define MASQ_PLUGIN_ENTRY_SYMBOL "masq_plugin_entry"

/** Plugin kinds (masq_plugin_descriptor.kind). */
#define MASQ_PLUGIN_STORAGE 1
#define MASQ_PLUGIN_TRANSPORT 2
#define MASQ_PLUGIN_WALLET 3
/* The same kinds under the names masq.h uses (masq_plugin_info.kind); the
 * definitions are identical, so either header may come first. */
#define MASQ_PLUGIN_KIND_STORAGE 1
#define MASQ_PLUGIN_KIND_TRANSPORT 2
#define MASQ_PLUGIN_KIND_WALLET 3

/** Log levels for masq_host.log. */
#define MASQ_LOG_ERROR 0
#define MASQ_LOG_WARN 1
#define MASQ_LOG_INFO 2
#define MASQ_LOG_DEBUG 3

#if defined(_WIN32)
#define MASQ_PLUGIN_EXPORT __declspec(dllexport)
#else
#define MASQ_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

/**
 * What masq_plugin_entry() returns. The plugin owns the descriptor and
 * everything it points to; all of it must stay valid and unchanged for as
 * long as the shared object is loaded (use static storage). The kernel reads
 * it from any thread.
 */
typedef struct masq_plugin_descriptor {
    uint32_t struct_size;  /* sizeof(masq_plugin_descriptor)                 */
    uint32_t abi_version;  /* MASQ_PLUGIN_ABI_VERSION                        */
    uint32_t kind;         /* MASQ_PLUGIN_STORAGE / _TRANSPORT / _WALLET      */
    uint32_t reserved;     /* 0                                               */
    const char *name;      /* [a-z0-9_]+, 1..64 bytes; config names it so;
                              the file is libmasq_<kind>_<name>.so            */
    const char *version;   /* the plugin's own version, e.g. "1.2.0"          */
    const char *description; /* one line for `masq plugins`; may be NULL      */
    const void *vtable;    /* masq_storage_vtable, masq_transport_vtable or
                              masq_wallet_vtable according to kind            */
} masq_plugin_descriptor;

/** Type of the entry point. It takes no arguments, must not fail and must be
 *  callable from any thread, any number of times. */
typedef const masq_plugin_descriptor *(*masq_plugin_entry_fn)(void);

/* ------------------------------------------------------------------------ */
/* Options and the host table                                               */

/** One configuration option, as written in the config file (numbers and
 *  booleans arrive as their JSON text, e.g. "5000", "true"). Both strings are
 *  owned by the kernel and valid only during the call that receives them. */
typedef struct masq_plugin_option {
    const char *key;
    const char *value;
} masq_plugin_option;

/** Receives bytes the callee still owns. Return MASQ_OK, or a status code
 *  (typically MASQ_E_NOMEM) that the callee must return unchanged. The data
 *  pointer is valid only during the call. */
typedef int (*masq_bytes_sink)(void *sink_ctx, const uint8_t *data, size_t len);

/** Events for masq_host.peer_event (see "Transport plugins" below for
 *  what the kernel does with each). */
#define MASQ_PEER_UP 1         /* `peer` (a peer id) is reachable           */
#define MASQ_PEER_DOWN 2       /* `peer` is gone                             */
#define MASQ_TRANSPORT_UP 3    /* the transport can send now (`peer`: the
                                  endpoint, or "" when it has none)           */
#define MASQ_TRANSPORT_DOWN 4  /* the transport cannot send until further
                                  notice (it keeps trying)                    */
#define MASQ_ROOM_CHANGED 5    /* the membership of room `peer` changed (who
                                  is in it is unknown or unchanged)           */

typedef struct masq_host masq_host;

/** Whether `host` offers `member`: its table is long enough to hold the
 *  member (struct_size covers the member's end) and the member is not NULL.
 *  Test every member you call this way, never struct_size against
 *  sizeof(masq_host): a plugin built against a newer header must still run
 *  on an older kernel that offers what it needs, and a kernel built against
 *  a newer header hands a longer table. */
#define MASQ_HOST_HAS(host, member)                                                          \
    ((host) != NULL && (size_t)(host)->struct_size >= offsetof(masq_host, member) + sizeof((host)->member) && \
     (host)->member != NULL)

/**
 * Services the kernel offers a plugin instance. The kernel owns the table;
 * it stays valid until the instance is closed/destroyed. Every function may
 * be called from any thread. Members a host does not offer to a given kind
 * are NULL (frame_received and peer_event are non-NULL for transports only).
 */
struct masq_host {
    uint32_t struct_size;   /* sizeof(masq_host) as the kernel was compiled   */
    uint32_t abi_version;   /* MASQ_PLUGIN_ABI_VERSION                        */
    void *host_ctx;         /* opaque; belongs to the kernel                  */

    /** Log a line (UTF-8, no trailing newline needed). Never log secrets. */
    void (*log)(const masq_host *host, int level, const char *message);

    /** Record `message` as the explanation of a failure with `status` on the
     *  calling thread, and return `status` so a plugin can write
     *  `return host->error(host, MASQ_E_IO, "disk full");`. message may be
     *  NULL; it is copied. */
    int (*error)(const masq_host *host, int status, const char *message);

    /** Wall-clock time, milliseconds since the Unix epoch. */
    uint64_t (*now_unix_ms)(const masq_host *host);

    /** Monotonic time in nanoseconds (arbitrary origin), for timeouts. */
    uint64_t (*monotonic_ns)(const masq_host *host);

    /** Fill buf with len cryptographically secure random bytes.
     *  Returns MASQ_OK or MASQ_E_INTERNAL. */
    int (*random_bytes)(const masq_host *host, uint8_t *buf, size_t len);

    /** Transports: hand a received frame to the kernel. `peer` identifies the
     *  sender (transport-specific, UTF-8); `room` is the room it arrived in,
     *  or NULL for a direct frame. The kernel copies everything before
     *  returning; it never blocks on the network. */
    void (*frame_received)(const masq_host *host, const char *peer,
                           const char *room, const uint8_t *frame, size_t len);

    /** Transports: a peer came up or went down (MASQ_PEER_UP / _DOWN). */
    void (*peer_event)(const masq_host *host, const char *peer, int event);

    /* Appended members: call one only when host->struct_size covers it. */

    /** Transports: peer_event(peer, MASQ_PEER_UP) together with what the
     *  transport knows of the new peer, as one JSON object of strings — for
     *  a WebSocket server, e.g. {"origin": "http://localhost:8000",
     *  "host": "127.0.0.1:7071", "path": "/", "remote": "127.0.0.1:53122"}
     *  (a field is absent when unknown: a native client sends no origin).
     *  The kernel copies it. A transport that calls this for a peer does not
     *  also call peer_event(MASQ_PEER_UP) for it. */
    void (*peer_up_info)(const masq_host *host, const char *peer, const char *info_json);

    /** Transports that poll mailboxes (Connectoid): answer a challenge. A
     *  mailbox service proves that a client owns mailbox `mailbox` (the room
     *  the transport joined, e.g. "PUB.URL.EXT") by sealing a random
     *  question to its public key; only the kernel holds the private key, so
     *  the transport hands the sealed question (`question`, `len` bytes, as
     *  the service sent it, decoded from base64url) here and receives the
     *  answer through sink, to send back as the service asks. Returns MASQ_OK;
     *  MASQ_E_NOT_FOUND when the kernel holds no key for `mailbox`;
     *  MASQ_E_INVALID when the question does not open with that key. The
     *  kernel copies what it needs before returning. NULL when the host does
     *  not offer it (then a mailbox transport cannot receive). */
    int (*answer_challenge)(const masq_host *host, const char *mailbox,
                            const uint8_t *question, size_t len,
                            masq_bytes_sink sink, void *sink_ctx);
};

/* ------------------------------------------------------------------------ */
/* Storage plugins: an ordered key/value engine                              */

/** Scan visitor result that ends a scan early without error. */
#define MASQ_SCAN_STOP (-1)

/** Called for each entry of a scan, in ascending bytewise key order. The
 *  pointers are valid only during the call. Return MASQ_OK to continue,
 *  MASQ_SCAN_STOP to stop (the scan then returns MASQ_OK), or a status code
 *  to abort (the scan returns that code). */
typedef int (*masq_scan_visitor)(void *ctx, const uint8_t *key, size_t key_len,
                                 const uint8_t *value, size_t value_len);

/** Storage capability flags (masq_storage_vtable.flags). */
#define MASQ_STORAGE_PERSISTENT 1u /* data survives close and process death */

/**
 * A storage engine maps byte-string keys to byte-string values, keeps keys
 * in ascending bytewise order (memcmp, shorter first on a common prefix) and
 * offers write transactions. The kernel owns all merge and sync semantics;
 * the engine stores bytes.
 *
 * Threads: the kernel serializes all calls on one `db`; different `db`
 * handles may be used concurrently from different threads.
 * Transactions: writes (put, del, delete_range) happen only between begin
 * and commit/rollback, never nested. Reads (get, scan) may happen inside a
 * transaction (and then see its uncommitted writes) or outside one (then they
 * see the last committed state). After commit returns MASQ_OK the writes are
 * durable to the degree the engine's options promise.
 * A scan's visitor never calls back into the same `db`.
 */
typedef struct masq_storage_vtable {
    uint32_t struct_size; /* sizeof(masq_storage_vtable)                     */
    uint32_t flags;       /* MASQ_STORAGE_* capability bits                   */

    /** Required. Open (creating if needed) a database. `options` holds the
     *  config's storage options plus "data_dir", the absolute path of the
     *  store's data directory. On success store the handle in *db_out. */
    int (*open)(const masq_host *host, const masq_plugin_option *options,
                size_t option_count, void **db_out);

    /** Required. Close the handle (rolling back an open transaction) and
     *  release everything. db may be NULL. */
    void (*close)(void *db);

    /** Required. Begin a write transaction. Returns MASQ_E_BUSY if another
     *  process holds the write lock longer than the engine is willing to wait. */
    int (*begin)(void *db);
    /** Required. Make the transaction's writes durable and visible. */
    int (*commit)(void *db);
    /** Required. Discard the transaction's writes. */
    int (*rollback)(void *db);

    /** Required. Look a key up; on a hit call sink once with the value and
     *  return what it returned; on a miss return MASQ_E_NOT_FOUND without
     *  calling sink (and without calling host->error). */
    int (*get)(void *db, const uint8_t *key, size_t key_len,
               masq_bytes_sink sink, void *sink_ctx);

    /** Required. Insert or replace. value may be NULL when value_len is 0. */
    int (*put)(void *db, const uint8_t *key, size_t key_len,
               const uint8_t *value, size_t value_len);

    /** Required. Remove a key; removing an absent key is MASQ_OK. */
    int (*del)(void *db, const uint8_t *key, size_t key_len);

    /** Required. Visit every key k with start <= k < end in ascending order.
     *  start NULL/0 means "from the first key"; end NULL means "to the last
     *  key" (end_len is then ignored). flags is 0 (reserved). */
    int (*scan)(void *db, const uint8_t *start, size_t start_len,
                const uint8_t *end, size_t end_len, uint32_t flags,
                masq_scan_visitor visitor, void *visitor_ctx);

    /** Optional (may be NULL). Remove every key in [start, end); same bounds
     *  rules as scan. The kernel falls back to scan + del when NULL. */
    int (*delete_range)(void *db, const uint8_t *start, size_t start_len,
                        const uint8_t *end, size_t end_len);

    /** Optional (may be NULL). Rewrite the engine's files so that deleted or
     *  overwritten bytes no longer linger on disk (free pages, journals). The
     *  kernel calls it, outside any transaction, after encrypting a store's
     *  data in place; it may take a while. */
    int (*compact)(void *db);
} masq_storage_vtable;

/* ------------------------------------------------------------------------ */
/* Transport plugins: move opaque frames between devices                     */

/** Transport capability flags (masq_transport_vtable.flags). */
#define MASQ_TRANSPORT_LISTEN 1u  /* can accept incoming connections         */
#define MASQ_TRANSPORT_CONNECT 2u /* can connect out to an endpoint          */
#define MASQ_TRANSPORT_ROOMS 4u   /* can join rooms and send to a room       */

/**
 * A transport carries frames (opaque bytes, already sealed by the kernel's
 * crypto sessions) to peers or rooms. Received frames and peer up/down events
 * go back through host->frame_received and host->peer_event, from any
 * thread, at any time between start and the return of stop.
 *
 * Threads: every function may be called from any thread, concurrently,
 * except that destroy is called once, after stop, with no other call running.
 * Endpoints are transport-specific UTF-8 strings (e.g. "ws://127.0.0.1:7070",
 * "127.0.0.1:0"); peers and rooms are transport-specific UTF-8 identifiers.
 *
 * What the kernel does with a transport used for sync (docs/WRITING-A-PLUGIN.md,
 * "Writing a transport", tells the same with an example):
 *   - Options: the entry's "options" from the config, plus "data_dir" (a
 *     directory the transport may keep state in): accept "data_dir" even if
 *     you do not use it. Refuse other unknown options with MASQ_E_CONFIG.
 *   - Calls: create, start; then connect(endpoint) when the config entry has
 *     an option named "url" (its value is the endpoint); then join(room),
 *     once, with the group's room: 32 lowercase hex characters (16 random
 *     bytes shared by the devices of one user). Sync needs
 *     MASQ_TRANSPORT_ROOMS; it sends only to that room: send(room, frame)
 *     must reach every *other* member of the room that is reachable now
 *     (no store-and-forward is expected: the kernel resends what is not
 *     acknowledged). listen and direct (peer) destinations are for other
 *     hosts, such as masqd; stop and destroy at the end.
 *   - Events: report MASQ_TRANSPORT_UP when frames can be sent (connected to
 *     a relay, a LAN socket bound) and MASQ_TRANSPORT_DOWN when they cannot
 *     (the kernel shows "connected" from these; a transport that never
 *     reports either counts as up once a frame arrives). Report
 *     MASQ_PEER_UP / MASQ_PEER_DOWN with peer ids of your choosing when you
 *     learn of peers coming and going, or MASQ_ROOM_CHANGED(room) when you
 *     only know that the room's membership changed: either makes the kernel
 *     ask the room who is there (so a device that left stops being
 *     "present", and one that came back is greeted). frame_received's
 *     `room` is the room the frame arrived in (required for sync: frames
 *     with a NULL room are not sync frames); `peer` is informational.
 *   - Size: declare the largest frame you carry in max_frame_bytes (below);
 *     the kernel cuts its sync frames to fit it and sends a bigger message
 *     as fragments. Sync needs at least 16,659 bytes per frame and refuses
 *     to start on a transport that declares less. A frame you cannot carry
 *     is refused with MASQ_E_TOO_LARGE (the kernel shows it in the device's
 *     status, it does not retry it as is). The kernel never sends an empty
 *     frame (you may refuse one with MASQ_E_INVALID).
 *   - Order and loss: no promise is required. Sealed frames open in any
 *     order and the kernel resends what is not acknowledged; keeping one
 *     sender's frames in order makes large (fragmented) messages arrive
 *     sooner.
 *   - After stop: stop() waits for callbacks in progress and returns; after
 *     that no host function runs (log included) and every other entry point
 *     answers MASQ_E_CLOSED without blocking, whichever thread calls it,
 *     even while stop() is running. The kernel never calls stop() from
 *     inside a callback (a plugin may refuse that with MASQ_E_INVALID).
 *     Emitting MASQ_TRANSPORT_DOWN from stop() is not needed.
 *   - send() to a room not joined: the kernel never does it; a plugin may
 *     answer MASQ_E_NOT_FOUND or send anyway.
 *   - host->log never calls back into the plugin, so a plugin may call it
 *     with its own locks held.
 *   - stats: counters or gauges ("peers", "port"), all unsigned.
 *   - Frames you refuse from the network (malformed, unknown version) are
 *     counted in stats' "frames_rejected"; never hand them to the kernel.
 * Conformance: Tests/transports runs any transport plugin through this
 * contract (join, send, receive, events, reconnect, hostile frames, stop
 * while busy, stats).
 */
typedef struct masq_transport_vtable {
    uint32_t struct_size; /* sizeof(masq_transport_vtable)                   */
    uint32_t flags;       /* MASQ_TRANSPORT_* capability bits                 */

    /** Required. Create an instance bound to `host` (valid until destroy). */
    int (*create)(const masq_host *host, const masq_plugin_option *options,
                  size_t option_count, void **transport_out);
    /** Required. Release the instance. Called after stop. */
    void (*destroy)(void *transport);
    /** Required. Start I/O (threads, event loops). */
    int (*start)(void *transport);
    /** Required. Stop I/O; when it returns no host callback is running or
     *  will run for this instance. */
    int (*stop)(void *transport);

    /** Optional (required with MASQ_TRANSPORT_LISTEN). Accept connections on
     *  endpoint. The bound endpoint (e.g. with the real port when 0 was
     *  asked) is written through sink when sink is not NULL. */
    int (*listen)(void *transport, const char *endpoint,
                  masq_bytes_sink bound_sink, void *sink_ctx);
    /** Optional (required with MASQ_TRANSPORT_CONNECT). Connect (and keep
     *  reconnecting) to endpoint; returns once the attempt is under way. */
    int (*connect)(void *transport, const char *endpoint);

    /** Optional (required with MASQ_TRANSPORT_ROOMS). Join / leave a room. */
    int (*join)(void *transport, const char *room);
    int (*leave)(void *transport, const char *room);

    /** Required. Queue one frame for `destination` (a peer id, or a room id
     *  with MASQ_TRANSPORT_ROOMS). The transport copies the frame before
     *  returning. MASQ_E_TOO_LARGE if it exceeds the transport's frame limit;
     *  MASQ_E_BUSY if the outbound queue is full. */
    int (*send)(void *transport, const char *destination,
                const uint8_t *frame, size_t len);

    /* Appended members: the host reads one only when struct_size covers it. */

    /** Optional. The transport's counters as one JSON object whose values
     *  are unsigned integers, through sink — for example {"frames_sent": 12,
     *  "frames_received": 9, "frames_rejected": 1, "connects": 2}. Frames the
     *  transport refused (malformed, truncated, unknown version, unexpected)
     *  belong in "frames_rejected". Called from any thread. */
    int (*stats)(void *transport, masq_bytes_sink sink, void *sink_ctx);

    /** Optional. Close the connection to one peer (for example an app whose
     *  consent the user revoked); `reason` (UTF-8, may be NULL) may be shown
     *  to it. MASQ_E_NOT_FOUND for an unknown peer. MASQ_PEER_DOWN follows.
     *  Called from any thread. */
    int (*disconnect)(void *transport, const char *peer, const char *reason);

    /** Optional. The largest frame, in bytes, send() carries on this
     *  instance (its options may set it; the room and the transport's own
     *  framing excluded); 0 when there is no limit. Called after create,
     *  from any thread. */
    uint64_t (*max_frame_bytes)(void *transport);
} masq_transport_vtable;

/* ------------------------------------------------------------------------ */
/* Wallet plugins: addresses, balances, payments and signatures              */

/**
 * Amounts are unsigned decimal integers in the asset's smallest unit (e.g.
 * wei), as UTF-8 strings, because they exceed 64 bits. `asset` names a token
 * ("ETH", a contract address, or a ledger-specific name); NULL means the
 * wallet's default asset.
 *
 * Threads: every function may be called from any thread, concurrently.
 */
typedef struct masq_wallet_vtable {
    uint32_t struct_size; /* sizeof(masq_wallet_vtable)                      */
    uint32_t flags;       /* 0 (reserved)                                     */

    /** Required. Create an instance bound to `host` (valid until destroy). */
    int (*create)(const masq_host *host, const masq_plugin_option *options,
                  size_t option_count, void **wallet_out);
    /** Required. Release the instance; wipes key material it holds. */
    void (*destroy)(void *wallet);

    /** Required. This wallet's receiving address (UTF-8) through sink. */
    int (*address)(void *wallet, masq_bytes_sink sink, void *sink_ctx);

    /** Required. Balance of `asset` as a decimal string through sink. */
    int (*balance)(void *wallet, const char *asset, masq_bytes_sink sink,
                   void *sink_ctx);

    /** Required. Pay `amount` of `asset` to address `to`; memo (may be NULL)
     *  is attached where the ledger allows. The transaction id (UTF-8) goes
     *  through sink. MASQ_E_FUNDS when the balance does not cover it. */
    int (*pay)(void *wallet, const char *to, const char *asset,
               const char *amount, const uint8_t *memo, size_t memo_len,
               masq_bytes_sink txid_sink, void *sink_ctx);

    /** Required. Sign msg with the wallet's key; the signature goes through
     *  sink. */
    int (*sign)(void *wallet, const uint8_t *msg, size_t msg_len,
                masq_bytes_sink sig_sink, void *sink_ctx);

    /** Required. MASQ_OK if sig is `address`'s signature over msg,
     *  MASQ_E_BAD_SIGNATURE if not. */
    int (*verify)(void *wallet, const char *address, const uint8_t *msg,
                  size_t msg_len, const uint8_t *sig, size_t sig_len);

    /** Required. MASQ_OK if transaction `txid` moved at least `amount` of
     *  `asset` from `from` to `to` and is final; MASQ_E_NOT_FOUND if unknown
     *  (or not yet final); MASQ_E_DENIED if it exists but does not match. */
    int (*verify_payment)(void *wallet, const char *txid, const char *from,
                          const char *to, const char *asset,
                          const char *amount);

    /* Appended members: the host reads one only when struct_size covers it. */

    /** Optional. Payments this wallet received after `cursor` (0: from the
     *  start), oldest first, as one JSON object through sink:
     *  {"payments": [{"txid": "...", "from": "ADDRESS", "asset": "...",
     *  "amount": "DECIMAL"}], "cursor": N} where `cursor` is what to pass
     *  next time. An accountant credits debtors with it. At most `limit`
     *  payments per call. */
    int (*payments)(void *wallet, uint64_t cursor, uint32_t limit,
                    masq_bytes_sink sink, void *sink_ctx);
} masq_wallet_vtable;

/* ------------------------------------------------------------------------ */

/** Every plugin defines this function (and exports nothing else):
 *
 *    MASQ_PLUGIN_EXPORT const masq_plugin_descriptor *masq_plugin_entry(void)
 *    { return &my_descriptor; }
 */
MASQ_PLUGIN_EXPORT const masq_plugin_descriptor *masq_plugin_entry(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MASQ_PLUGIN_H */

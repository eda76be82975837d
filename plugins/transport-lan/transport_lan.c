/*
 * transport-lan — a Masq transport for the devices of one local network, in
 * plain C11 against include/masq_plugin.h alone: no server, no internet. Two
 * laptops at home find each other and sync. It is the reference for
 * third-party transport authors (docs/WRITING-A-PLUGIN.md, "Writing a
 * transport"); README.md beside it describes the wire format and limits.
 *
 * Discovery: UDP beacons (broadcast by default) every beacon_interval_ms, and
 * a static list of addresses (option "peers", or connect()). Frames travel
 * over TCP, length-prefixed. Rooms never appear on the wire: beacons and
 * handshakes carry tags, salted hashes of a room bound to a fresh nonce and
 * the sender's id, so only devices that know a room learn that they share it.
 *
 * Threads: one I/O thread per instance owns every socket and runs a poll()
 * loop. The API functions, called from any thread, touch shared state under
 * `mu` and wake the I/O thread through a pipe. The I/O thread holds `mu`
 * except while it waits in poll() and while it calls the host
 * (frame_received, peer_event), so the host may call back into the
 * transport from a callback (host->log is called with `mu` held: logging
 * never calls back). Only the I/O thread creates or frees connections, so
 * a connection stays valid while it calls the host.
 */
#define _POSIX_C_SOURCE 200809L

#include "masq_plugin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- wire constants (README.md, "Wire format") ----------------------------- */

#define PROTOCOL_VERSION 1
static const uint8_t MAGIC[4] = {'M', 'Q', 'L', 'N'};
#define ID_BYTES 8
#define NONCE_BYTES 16
#define TAG_BYTES 16
#define MAX_ROOMS 16       /* rooms one instance joins at once              */
#define MAX_ROOM_BYTES 64  /* a room is 1..64 bytes of text                 */
#define MAX_STATIC_PEERS 64

/* TCP messages: u32 length (of type and body) · u8 type · body */
#define MSG_HELLO 1 /* magic · u8 version · id · nonce · u16 listen port · u32 max frame */
#define MSG_ROOMS 2 /* u8 n · n × tag                                                  */
#define MSG_FRAME 3 /* tag · frame                                                     */
#define MSG_PING 4  /* (empty)                                                         */
#define HELLO_BODY (4 + 1 + ID_BYTES + NONCE_BYTES + 2 + 4)
/* UDP beacon: magic · u8 version · id · u16 tcp port · nonce · u8 n · n × tag */
#define BEACON_HEAD (4 + 1 + ID_BYTES + 2 + NONCE_BYTES + 1)

/* ---- timing and per-round budgets ------------------------------------------ */

#define HANDSHAKE_TIMEOUT_MS 5000 /* connected and HELLO exchanged within this   */
#define PING_INTERVAL_MS 5000     /* send a PING after this long without sending */
#define IDLE_TIMEOUT_MS 20000     /* drop a peer silent this long (no PING)      */
#define MIN_BACKOFF_MS 200        /* reconnecting to a static peer               */
#define MAX_BACKOFF_MS 5000
#define MESSAGES_PER_ROUND 64     /* per connection per poll round, so one busy  */
#define ACCEPTS_PER_ROUND 16      /* peer or a flood cannot hold the loop (and   */
#define BEACONS_PER_ROUND 16      /* stop() is noticed promptly)                 */

/* ---- SHA-256 (FIPS 180-4), for room tags ------------------------------------ */

typedef struct sha256 {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t block[64];
    size_t used;
} sha256;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_compress(sha256 *s, const uint8_t *p) {
    uint32_t w[64], a[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR32(w[i - 15], 7) ^ ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR32(w[i - 2], 17) ^ ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(a, s->h, sizeof a);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = a[7] + (ROR32(a[4], 6) ^ ROR32(a[4], 11) ^ ROR32(a[4], 25)) + ((a[4] & a[5]) ^ (~a[4] & a[6])) + K256[i] + w[i];
        uint32_t t2 = (ROR32(a[0], 2) ^ ROR32(a[0], 13) ^ ROR32(a[0], 22)) + ((a[0] & a[1]) ^ (a[0] & a[2]) ^ (a[1] & a[2]));
        memmove(a + 1, a, 7 * sizeof a[0]);
        a[4] += t1;
        a[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++) s->h[i] += a[i];
}

static void sha256_init(sha256 *s) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->bytes = 0;
    s->used = 0;
}

static void sha256_update(sha256 *s, const void *data, size_t len) {
    const uint8_t *p = data;
    s->bytes += len;
    while (len > 0) {
        size_t n = 64 - s->used < len ? 64 - s->used : len;
        memcpy(s->block + s->used, p, n);
        s->used += n;
        p += n;
        len -= n;
        if (s->used == 64) {
            sha256_compress(s, s->block);
            s->used = 0;
        }
    }
}

static void sha256_final(sha256 *s, uint8_t out[32]) {
    uint64_t bits = s->bytes * 8;
    uint8_t pad = 0x80, zero = 0, length[8];
    sha256_update(s, &pad, 1);
    while (s->used != 56) sha256_update(s, &zero, 1);
    for (int i = 0; i < 8; i++) length[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, length, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

/* A room as `sender` names it to the holder of `nonce`:
 * SHA-256("masq-lan-room-v1" · u8 len · room · nonce · sender id), first 16
 * bytes. The nonce is fresh per connection (or beacon), so tags cannot be
 * replayed or linked over time; the sender id stops reflection (a peer
 * cannot hand our own tag back to us, since no peer may use our id). */
static void room_tag(const char *room, const uint8_t nonce[NONCE_BYTES], const uint8_t sender[ID_BYTES],
                     uint8_t tag[TAG_BYTES]) {
    static const char label[] = "masq-lan-room-v1";
    uint8_t len = (uint8_t)strlen(room), digest[32];
    sha256 s;
    sha256_init(&s);
    sha256_update(&s, label, sizeof label - 1);
    sha256_update(&s, &len, 1);
    sha256_update(&s, room, len);
    sha256_update(&s, nonce, NONCE_BYTES);
    sha256_update(&s, sender, ID_BYTES);
    sha256_final(&s, digest);
    memcpy(tag, digest, TAG_BYTES);
}

/* ---- byte order ------------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* ---- state -------------------------------------------------------------------- */

/* One queued outbound message (whole, header included). */
typedef struct outmsg {
    struct outmsg *next;
    size_t len, sent;
    int is_frame;
    uint8_t bytes[];
} outmsg;

enum { C_CONNECTING, C_HANDSHAKE, C_OPEN };

typedef struct conn {
    uint64_t serial;             /* tells a new connection from a freed one    */
    int fd;
    int state;                   /* C_*                                        */
    int outbound;                /* we initiated it                            */
    int static_slot;             /* index in lan.statics, or -1                */
    struct sockaddr_in addr;     /* the peer's address                         */
    char addr_text[32];
    uint8_t nonce[NONCE_BYTES];  /* ours, for this connection                  */
    /* Known after the peer's HELLO (state C_OPEN): */
    uint8_t peer_id[ID_BYTES];
    char peer_name[2 * ID_BYTES + 1];
    uint8_t peer_nonce[NONCE_BYTES];
    uint16_t peer_port;          /* where it listens                           */
    uint32_t peer_max_frame;
    uint8_t peer_tags[MAX_ROOMS][TAG_BYTES]; /* its last ROOMS                 */
    size_t peer_tag_count;
    uint8_t send_tag[MAX_ROOMS][TAG_BYTES];  /* our room slot i, as we name it */
    uint8_t recv_tag[MAX_ROOMS][TAG_BYTES];  /* our room slot i, as it names it */
    uint32_t shared;             /* bit i: the peer is in our room slot i      */
    int announced;               /* MASQ_PEER_UP reported                      */
    /* The message being read: */
    uint8_t head[4];
    size_t head_got;
    uint8_t *body;
    size_t body_len, body_got;
    /* Outbound queue: */
    outmsg *out_head, *out_tail;
    size_t out_bytes;
    uint64_t opened_ms, last_recv_ms, last_send_ms;
} conn;

/* An address to keep a connection to (option "peers", or connect()). */
typedef struct static_peer {
    struct sockaddr_in addr;
    conn *conn;                  /* its connection, while there is one         */
    uint64_t next_attempt_ms, backoff_ms;
    int is_self;                 /* it answered with our own id: never again   */
    int known;                   /* id: who answered there last                */
    uint8_t id[ID_BYTES];
} static_peer;

enum { LAN_CREATED, LAN_RUNNING, LAN_STOPPING, LAN_STOPPED };

typedef struct counters {
    uint64_t frames_sent, frames_received, frames_rejected, frames_dropped;
    uint64_t connects, connections_refused, beacons_sent, beacons_received, beacons_rejected;
} counters;

typedef struct lan {
    const masq_host *host;
    /* Options (fixed after create). */
    struct in_addr bind_addr, discovery_addr;
    uint16_t port, discovery_port;
    uint32_t beacon_interval_ms, max_frame, max_peers;
    size_t max_queue_bytes;

    uint8_t id[ID_BYTES];
    char name[2 * ID_BYTES + 1];
    uint64_t rng;

    pthread_mutex_t mu;
    pthread_cond_t stopped_cv;
    int state;                   /* LAN_*; under mu                            */
    pthread_t thread;
    int listen_fd, udp_fd, wake[2];
    uint16_t bound_port;

    /* Under mu: */
    static_peer statics[MAX_STATIC_PEERS];
    size_t static_count;
    char rooms[MAX_ROOMS][MAX_ROOM_BYTES + 1];
    uint32_t rooms_used;         /* bit i: slot i holds a joined room          */
    int rooms_dirty;             /* joined or left since the I/O thread looked */
    conn **conns;                /* max_peers slots                            */
    uint64_t next_serial;
    uint64_t next_beacon_ms;
    counters n;
    struct pollfd *pollfds;      /* I/O thread only                            */
    conn **polled;
    uint64_t *polled_serial;
} lan;

/* ---- small helpers ------------------------------------------------------------ */

static int fail(lan *t, int status, const char *format, ...) {
    char message[256];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    return t->host->error(t->host, status, message);
}

static void say(lan *t, int level, const char *format, ...) {
    char message[256];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    t->host->log(t->host, level, message);
}

static uint64_t now_ms(lan *t) { return t->host->monotonic_ns(t->host) / 1000000u; }

static uint64_t random_below(lan *t, uint64_t bound) { /* xorshift64*, for jitter */
    t->rng ^= t->rng >> 12;
    t->rng ^= t->rng << 25;
    t->rng ^= t->rng >> 27;
    return bound ? (t->rng * 2685821657736338717ULL) % bound : 0;
}

static void hex(const uint8_t *bytes, size_t len, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * len] = '\0';
}

static void addr_text(const struct sockaddr_in *a, char *out, size_t size) {
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    snprintf(out, size, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
}

static int set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 ? -1 : 0;
}

static void wake_io(lan *t) {
    if (t->wake[1] >= 0) {
        uint8_t byte = 1;
        ssize_t ignored = write(t->wake[1], &byte, 1); /* full pipe: already woken */
        (void)ignored;
    }
}

/* Call the host without holding mu (it may call back into us). */
static void emit(lan *t, const char *peer, int event) {
    char copy[MAX_ROOM_BYTES + 1];
    snprintf(copy, sizeof copy, "%s", peer);
    pthread_mutex_unlock(&t->mu);
    t->host->peer_event(t->host, copy, event);
    pthread_mutex_lock(&t->mu);
}

static size_t conn_count(lan *t) {
    size_t count = 0;
    for (uint32_t i = 0; i < t->max_peers; i++) count += t->conns[i] != NULL;
    return count;
}

/* ---- options ---------------------------------------------------------------- */

static const char KNOWN_OPTIONS[] = "port, bind, discovery_port, discovery_address, beacon_interval_ms, peers, "
                                    "max_frame_bytes, max_peers, max_queue_bytes, data_dir";

static int parse_number(lan *t, const char *key, const char *value, uint64_t min, uint64_t max, uint64_t *out) {
    uint64_t v = 0;
    if (!*value) return fail(t, MASQ_E_CONFIG, "option %s: expected a number, found nothing", key);
    for (const char *p = value; *p; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
            return fail(t, MASQ_E_CONFIG, "option %s: \"%s\" is not a number", key, value);
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (v < min || v > max)
        return fail(t, MASQ_E_CONFIG, "option %s: %llu is outside %llu...%llu", key, (unsigned long long)v,
                    (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return MASQ_OK;
}

static int parse_ipv4(lan *t, const char *key, const char *value, struct in_addr *out) {
    if (inet_pton(AF_INET, value, out) != 1)
        return fail(t, MASQ_E_CONFIG, "option %s: \"%s\" is not an IPv4 address", key, value);
    return MASQ_OK;
}

/* "a.b.c.d:port" (numeric: resolving names could block the I/O thread). */
static int parse_endpoint(lan *t, const char *what, const char *text, size_t len, struct sockaddr_in *out) {
    char buf[32], ip[32];
    if (len == 0 || len >= sizeof buf) return fail(t, MASQ_E_CONFIG, "%s: \"%.*s\" is not IPV4:PORT", what, (int)(len > 40 ? 40 : len), text);
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *colon = strrchr(buf, ':');
    uint64_t port;
    if (!colon) return fail(t, MASQ_E_CONFIG, "%s: \"%s\" is not IPV4:PORT", what, buf);
    memcpy(ip, buf, (size_t)(colon - buf));
    ip[colon - buf] = '\0';
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    if (inet_pton(AF_INET, ip, &out->sin_addr) != 1 || parse_number(t, what, colon + 1, 1, 65535, &port) != MASQ_OK)
        return fail(t, MASQ_E_CONFIG, "%s: \"%s\" is not IPV4:PORT (numeric address, port 1-65535)", what, buf);
    out->sin_port = htons((uint16_t)port);
    return MASQ_OK;
}

static int add_static(lan *t, const struct sockaddr_in *addr) {
    for (size_t i = 0; i < t->static_count; i++)
        if (t->statics[i].addr.sin_addr.s_addr == addr->sin_addr.s_addr && t->statics[i].addr.sin_port == addr->sin_port)
            return MASQ_OK;
    if (t->static_count == MAX_STATIC_PEERS) return fail(t, MASQ_E_TOO_LARGE, "at most %d static peers", MAX_STATIC_PEERS);
    static_peer *s = &t->statics[t->static_count++];
    memset(s, 0, sizeof *s);
    s->addr = *addr;
    s->backoff_ms = MIN_BACKOFF_MS;
    return MASQ_OK;
}

/* peers: addresses separated by commas and/or spaces. */
static int parse_peers(lan *t, const char *value) {
    const char *p = value;
    while (*p) {
        size_t len = strcspn(p, ", \t");
        if (len > 0) {
            struct sockaddr_in addr;
            int status = parse_endpoint(t, "option peers", p, len, &addr);
            if (status == MASQ_OK) status = add_static(t, &addr);
            if (status == MASQ_E_TOO_LARGE) return fail(t, MASQ_E_CONFIG, "option peers: at most %d addresses", MAX_STATIC_PEERS);
            if (status != MASQ_OK) return status;
        }
        p += len;
        p += strspn(p, ", \t");
    }
    return MASQ_OK;
}

static int apply_option(lan *t, const char *key, const char *value) {
    uint64_t v;
    int status;
#define NUMBER(min, max, field)                                                        \
    do {                                                                               \
        if ((status = parse_number(t, key, value, min, max, &v)) != MASQ_OK) return status; \
        field = v;                                                                     \
    } while (0)
    if (strcmp(key, "data_dir") == 0) return MASQ_OK; /* nothing kept on disk */
    if (strcmp(key, "port") == 0) NUMBER(0, 65535, t->port);
    else if (strcmp(key, "discovery_port") == 0) NUMBER(0, 65535, t->discovery_port);
    else if (strcmp(key, "beacon_interval_ms") == 0) NUMBER(100, 600000, t->beacon_interval_ms);
    else if (strcmp(key, "max_frame_bytes") == 0) NUMBER(64, 64u << 20, t->max_frame);
    else if (strcmp(key, "max_peers") == 0) NUMBER(1, 1024, t->max_peers);
    else if (strcmp(key, "max_queue_bytes") == 0) NUMBER(64u << 10, 1u << 30, t->max_queue_bytes);
    else if (strcmp(key, "bind") == 0) return parse_ipv4(t, key, value, &t->bind_addr);
    else if (strcmp(key, "discovery_address") == 0) return parse_ipv4(t, key, value, &t->discovery_addr);
    else if (strcmp(key, "peers") == 0) return parse_peers(t, value);
    else return fail(t, MASQ_E_CONFIG, "unknown option \"%s\" (known: %s)", key, KNOWN_OPTIONS);
#undef NUMBER
    return MASQ_OK;
}

/* ---- connections ------------------------------------------------------------- */

/* Queue a message: header, then a and b (the body, in two parts). */
static int enqueue(conn *c, int type, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    size_t len = 5 + alen + blen;
    outmsg *m = malloc(sizeof *m + len);
    if (!m) return MASQ_E_NOMEM;
    m->next = NULL;
    m->len = len;
    m->sent = 0;
    m->is_frame = type == MSG_FRAME;
    put32(m->bytes, (uint32_t)(1 + alen + blen));
    m->bytes[4] = (uint8_t)type;
    if (alen) memcpy(m->bytes + 5, a, alen);
    if (blen) memcpy(m->bytes + 5 + alen, b, blen);
    if (c->out_tail) c->out_tail->next = m;
    else c->out_head = m;
    c->out_tail = m;
    c->out_bytes += len;
    return MASQ_OK;
}

static void send_hello(lan *t, conn *c) {
    uint8_t body[HELLO_BODY], *p = body;
    memcpy(p, MAGIC, 4);
    p[4] = PROTOCOL_VERSION;
    memcpy(p + 5, t->id, ID_BYTES);
    memcpy(p + 5 + ID_BYTES, c->nonce, NONCE_BYTES);
    put16(p + 5 + ID_BYTES + NONCE_BYTES, t->bound_port);
    put32(p + 7 + ID_BYTES + NONCE_BYTES, t->max_frame);
    enqueue(c, MSG_HELLO, body, sizeof body, NULL, 0);
}

/* Our rooms as we name them to this peer. */
static void send_rooms(lan *t, conn *c) {
    uint8_t body[1 + MAX_ROOMS * TAG_BYTES];
    size_t n = 0;
    for (int i = 0; i < MAX_ROOMS; i++)
        if (t->rooms_used & (1u << i)) memcpy(body + 1 + TAG_BYTES * n++, c->send_tag[i], TAG_BYTES);
    body[0] = (uint8_t)n;
    enqueue(c, MSG_ROOMS, body, 1 + TAG_BYTES * n, NULL, 0);
}

static conn *conn_new(lan *t, int fd, int outbound, int static_slot, const struct sockaddr_in *addr) {
    for (uint32_t i = 0; i < t->max_peers; i++) {
        if (t->conns[i]) continue;
        conn *c = calloc(1, sizeof *c);
        if (!c) break;
        c->serial = ++t->next_serial;
        c->fd = fd;
        c->state = outbound ? C_CONNECTING : C_HANDSHAKE;
        c->outbound = outbound;
        c->static_slot = static_slot;
        c->addr = *addr;
        addr_text(addr, c->addr_text, sizeof c->addr_text);
        if (t->host->random_bytes(t->host, c->nonce, NONCE_BYTES) != MASQ_OK) {
            free(c);
            break;
        }
        c->opened_ms = c->last_recv_ms = c->last_send_ms = now_ms(t);
        send_hello(t, c);
        t->conns[i] = c;
        if (static_slot >= 0) t->statics[static_slot].conn = c;
        return c;
    }
    close(fd);
    return NULL;
}

/* Close and free a connection; MASQ_PEER_DOWN if the host knew the peer. */
static void conn_close(lan *t, conn *c, int level, const char *why) {
    for (uint32_t i = 0; i < t->max_peers; i++)
        if (t->conns[i] == c) t->conns[i] = NULL;
    if (c->static_slot >= 0) {
        static_peer *s = &t->statics[c->static_slot];
        if (s->conn == c) {
            s->conn = NULL;
            s->next_attempt_ms = now_ms(t) + s->backoff_ms / 2 + random_below(t, s->backoff_ms / 2 + 1);
            s->backoff_ms = s->backoff_ms * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : s->backoff_ms * 2;
        }
    }
    if (why) say(t, level, "%s %s: %s", c->state == C_OPEN ? c->peer_name : "connection", c->addr_text, why);
    close(c->fd);
    while (c->out_head) {
        outmsg *next = c->out_head->next;
        free(c->out_head);
        c->out_head = next;
    }
    free(c->body);
    if (c->announced) emit(t, c->peer_name, MASQ_PEER_DOWN);
    free(c);
}

/* A message we refuse: count it, drop the connection. Returns -1 (closed). */
static int reject(lan *t, conn *c, const char *why) {
    t->n.frames_rejected++;
    conn_close(t, c, MASQ_LOG_WARN, why);
    return -1;
}

static void open_outbound(lan *t, const struct sockaddr_in *addr, int static_slot) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || set_nonblocking(fd) < 0) {
        if (fd >= 0) close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn *c = conn_new(t, fd, 1, static_slot, addr);
    if (!c) return;
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0) c->state = C_HANDSHAKE;
    else if (errno != EINPROGRESS) conn_close(t, c, MASQ_LOG_DEBUG, strerror(errno));
}

/* Recompute which of our rooms this peer shares, and tell the host:
 * MASQ_PEER_UP once it shares one, MASQ_ROOM_CHANGED for later changes. */
static void update_shared(lan *t, conn *c) {
    uint32_t shared = 0;
    for (int i = 0; i < MAX_ROOMS; i++) {
        if (!(t->rooms_used & (1u << i))) continue;
        for (size_t k = 0; k < c->peer_tag_count; k++)
            if (memcmp(c->recv_tag[i], c->peer_tags[k], TAG_BYTES) == 0) shared |= 1u << i;
    }
    uint32_t changed = shared ^ c->shared;
    c->shared = shared;
    if (!c->announced) {
        if (shared) {
            c->announced = 1;
            emit(t, c->peer_name, MASQ_PEER_UP);
        }
        return;
    }
    for (int i = 0; i < MAX_ROOMS; i++)
        if ((changed & (1u << i)) && (t->rooms_used & (1u << i))) emit(t, t->rooms[i], MASQ_ROOM_CHANGED);
}

static void compute_tags(lan *t, conn *c) {
    for (int i = 0; i < MAX_ROOMS; i++) {
        if (!(t->rooms_used & (1u << i))) continue;
        room_tag(t->rooms[i], c->peer_nonce, t->id, c->send_tag[i]);
        room_tag(t->rooms[i], c->nonce, c->peer_id, c->recv_tag[i]);
    }
}

/* Who keeps a connection when two link the same pair of devices: the one
 * whose initiator has the smaller (id, nonce) — both ends agree. */
static int conn_key_less(lan *t, const conn *a, const conn *b) {
    const uint8_t *ida = a->outbound ? t->id : a->peer_id, *idb = b->outbound ? t->id : b->peer_id;
    int order = memcmp(ida, idb, ID_BYTES);
    if (order != 0) return order < 0;
    return memcmp(a->outbound ? a->nonce : a->peer_nonce, b->outbound ? b->nonce : b->peer_nonce, NONCE_BYTES) < 0;
}

/* The peer's HELLO. Returns -1 when the connection was closed. */
static int on_hello(lan *t, conn *c, const uint8_t *body, size_t len) {
    if (len != HELLO_BODY || memcmp(body, MAGIC, 4) != 0) return reject(t, c, "not a masq-lan HELLO");
    if (body[4] != PROTOCOL_VERSION) return reject(t, c, "unsupported protocol version");
    memcpy(c->peer_id, body + 5, ID_BYTES);
    memcpy(c->peer_nonce, body + 5 + ID_BYTES, NONCE_BYTES);
    c->peer_port = get16(body + 5 + ID_BYTES + NONCE_BYTES);
    c->peer_max_frame = get32(body + 7 + ID_BYTES + NONCE_BYTES);
    hex(c->peer_id, ID_BYTES, c->peer_name);
    if (c->static_slot >= 0) {
        static_peer *s = &t->statics[c->static_slot];
        memcpy(s->id, c->peer_id, ID_BYTES);
        s->known = 1;
        s->backoff_ms = MIN_BACKOFF_MS;
    }
    if (memcmp(c->peer_id, t->id, ID_BYTES) == 0) { /* we called ourselves */
        if (c->static_slot >= 0) t->statics[c->static_slot].is_self = 1;
        conn_close(t, c, MASQ_LOG_DEBUG, "this is us");
        return -1;
    }
    c->state = C_OPEN;
    t->n.connects++;
    for (uint32_t i = 0; i < t->max_peers; i++) {
        conn *d = t->conns[i];
        if (!d || d == c || d->state != C_OPEN || memcmp(d->peer_id, c->peer_id, ID_BYTES) != 0) continue;
        if (conn_key_less(t, d, c)) {
            conn_close(t, c, MASQ_LOG_DEBUG, "already connected");
            return -1;
        }
        conn_close(t, d, MASQ_LOG_DEBUG, "replaced by a newer connection");
    }
    compute_tags(t, c);
    send_rooms(t, c);
    say(t, MASQ_LOG_INFO, "connected to %s at %s", c->peer_name, c->addr_text);
    return 0;
}

/* One whole message from a peer. Returns -1 when the connection was closed. */
static int on_message(lan *t, conn *c, const uint8_t *msg, size_t len) {
    int type = msg[0];
    const uint8_t *body = msg + 1;
    size_t blen = len - 1;
    c->last_recv_ms = now_ms(t);
    if (c->state != C_OPEN) return type == MSG_HELLO ? on_hello(t, c, body, blen) : reject(t, c, "expected HELLO");
    switch (type) {
    case MSG_ROOMS: {
        if (blen < 1 || body[0] > MAX_ROOMS || blen != 1 + (size_t)body[0] * TAG_BYTES) return reject(t, c, "malformed ROOMS");
        c->peer_tag_count = body[0];
        memcpy(c->peer_tags, body + 1, c->peer_tag_count * TAG_BYTES);
        update_shared(t, c);
        return 0;
    }
    case MSG_FRAME: {
        if (blen < TAG_BYTES) return reject(t, c, "truncated FRAME");
        for (int i = 0; i < MAX_ROOMS; i++) {
            if (!(c->shared & (1u << i)) || memcmp(body, c->recv_tag[i], TAG_BYTES) != 0) continue;
            char room[MAX_ROOM_BYTES + 1], peer[sizeof c->peer_name];
            memcpy(room, t->rooms[i], sizeof room);
            memcpy(peer, c->peer_name, sizeof peer);
            t->n.frames_received++;
            pthread_mutex_unlock(&t->mu);
            t->host->frame_received(t->host, peer, room, body + TAG_BYTES, blen - TAG_BYTES);
            pthread_mutex_lock(&t->mu);
            return 0;
        }
        /* Not a room we share (now): refused, but no reason to drop the
         * peer — it may simply not have seen our leave yet. */
        t->n.frames_rejected++;
        say(t, MASQ_LOG_DEBUG, "%s sent a frame for a room we do not share", c->peer_name);
        return 0;
    }
    case MSG_PING:
        return blen == 0 ? 0 : reject(t, c, "malformed PING");
    default:
        return reject(t, c, "unknown message type");
    }
}

/* Read what a peer sent, at most MESSAGES_PER_ROUND messages. */
static void conn_read(lan *t, conn *c) {
    for (int messages = 0; messages < MESSAGES_PER_ROUND && t->state == LAN_RUNNING;) {
        ssize_t r;
        if (!c->body) {
            r = recv(c->fd, c->head + c->head_got, 4 - c->head_got, 0);
            if (r > 0 && (c->head_got += (size_t)r) == 4) {
                /* Every length is checked before anything is allocated. */
                uint32_t len = get32(c->head);
                uint32_t limit = c->state == C_OPEN ? 1 + TAG_BYTES + t->max_frame : 1 + HELLO_BODY;
                if (len == 0 || len > limit) {
                    reject(t, c, len == 0 ? "empty message" : "message beyond the frame limit");
                    return;
                }
                if (!(c->body = malloc(len))) {
                    conn_close(t, c, MASQ_LOG_ERROR, "out of memory");
                    return;
                }
                c->body_len = len;
                c->body_got = 0;
            }
        } else {
            r = recv(c->fd, c->body + c->body_got, c->body_len - c->body_got, 0);
            if (r > 0 && (c->body_got += (size_t)r) == c->body_len) {
                uint8_t *msg = c->body;
                size_t len = c->body_len;
                c->body = NULL;
                c->head_got = 0;
                messages++;
                int closed = on_message(t, c, msg, len);
                free(msg);
                if (closed) return;
            }
        }
        if (r == 0) {
            conn_close(t, c, MASQ_LOG_INFO, c->head_got || c->body ? "closed mid-message" : "closed");
            return;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            conn_close(t, c, MASQ_LOG_INFO, strerror(errno));
            return;
        }
    }
}

static void conn_write(lan *t, conn *c) {
    while (c->out_head) {
        outmsg *m = c->out_head;
        ssize_t w = send(c->fd, m->bytes + m->sent, m->len - m->sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            conn_close(t, c, MASQ_LOG_INFO, strerror(errno));
            return;
        }
        c->last_send_ms = now_ms(t);
        if ((m->sent += (size_t)w) < m->len) continue;
        if (m->is_frame) t->n.frames_sent++;
        c->out_bytes -= m->len;
        c->out_head = m->next;
        if (!c->out_head) c->out_tail = NULL;
        free(m);
    }
}

/* ---- discovery ------------------------------------------------------------------ */

static void send_beacon(lan *t) {
    uint8_t packet[BEACON_HEAD + MAX_ROOMS * TAG_BYTES], nonce[NONCE_BYTES];
    size_t n = 0;
    if (t->host->random_bytes(t->host, nonce, NONCE_BYTES) != MASQ_OK) return;
    memcpy(packet, MAGIC, 4);
    packet[4] = PROTOCOL_VERSION;
    memcpy(packet + 5, t->id, ID_BYTES);
    put16(packet + 5 + ID_BYTES, t->bound_port);
    memcpy(packet + 7 + ID_BYTES, nonce, NONCE_BYTES);
    for (int i = 0; i < MAX_ROOMS; i++)
        if (t->rooms_used & (1u << i)) room_tag(t->rooms[i], nonce, t->id, packet + BEACON_HEAD + TAG_BYTES * n++);
    packet[BEACON_HEAD - 1] = (uint8_t)n;
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_addr = t->discovery_addr;
    to.sin_port = htons(t->discovery_port);
    if (sendto(t->udp_fd, packet, BEACON_HEAD + TAG_BYTES * n, 0, (struct sockaddr *)&to, sizeof to) >= 0) t->n.beacons_sent++;
    else say(t, MASQ_LOG_DEBUG, "beacon not sent: %s", strerror(errno));
}

/* A beacon naming one of our rooms: connect unless we already are. */
static void on_beacon(lan *t, const uint8_t *p, size_t len, const struct sockaddr_in *from) {
    if (len < BEACON_HEAD || memcmp(p, MAGIC, 4) != 0 || p[4] != PROTOCOL_VERSION || p[BEACON_HEAD - 1] > MAX_ROOMS ||
        len != BEACON_HEAD + (size_t)p[BEACON_HEAD - 1] * TAG_BYTES || get16(p + 5 + ID_BYTES) == 0) {
        t->n.beacons_rejected++;
        return;
    }
    const uint8_t *id = p + 5, *nonce = p + 7 + ID_BYTES, *tags = p + BEACON_HEAD;
    if (memcmp(id, t->id, ID_BYTES) == 0) return; /* our own */
    t->n.beacons_received++;
    int match = 0;
    for (int i = 0; i < MAX_ROOMS && !match; i++) {
        if (!(t->rooms_used & (1u << i))) continue;
        uint8_t tag[TAG_BYTES];
        room_tag(t->rooms[i], nonce, id, tag);
        for (size_t k = 0; k < p[BEACON_HEAD - 1]; k++) match |= memcmp(tag, tags + k * TAG_BYTES, TAG_BYTES) == 0;
    }
    if (!match) return;
    struct sockaddr_in addr = *from;
    addr.sin_port = htons(get16(p + 5 + ID_BYTES));
    for (uint32_t i = 0; i < t->max_peers; i++) {
        conn *c = t->conns[i];
        if (c && ((c->state == C_OPEN && memcmp(c->peer_id, id, ID_BYTES) == 0) ||
                  (c->state != C_OPEN && c->outbound && c->addr.sin_addr.s_addr == addr.sin_addr.s_addr && c->addr.sin_port == addr.sin_port)))
            return;
    }
    if (conn_count(t) < t->max_peers) open_outbound(t, &addr, -1);
}

/* ---- the I/O thread ---------------------------------------------------------------- */

static int peer_connected(lan *t, const static_peer *s) {
    for (uint32_t i = 0; i < t->max_peers; i++) {
        conn *c = t->conns[i];
        if (!c || c->state != C_OPEN) continue;
        if (s->known && memcmp(c->peer_id, s->id, ID_BYTES) == 0) return 1;
        /* It called us from its listening address's host. */
        if (c->addr.sin_addr.s_addr == s->addr.sin_addr.s_addr && htons(c->peer_port) == s->addr.sin_port) return 1;
    }
    return 0;
}

/* Timers: beacons, static peers, handshake and idle timeouts, pings.
 * Returns how long poll() may sleep (ms). */
static int housekeeping(lan *t) {
    uint64_t now = now_ms(t), next = now + 1000;
    if (t->rooms_dirty) { /* joined or left: tell every peer, then the host */
        t->rooms_dirty = 0;
        for (uint32_t i = 0; i < t->max_peers; i++) {
            conn *c = t->conns[i];
            if (!c || c->state != C_OPEN) continue;
            compute_tags(t, c);
            send_rooms(t, c);
            update_shared(t, c); /* may call the host; c stays ours */
        }
    }
    if (t->udp_fd >= 0 && t->rooms_used) {
        if (now >= t->next_beacon_ms) {
            send_beacon(t);
            t->next_beacon_ms = now + t->beacon_interval_ms - t->beacon_interval_ms / 10 + random_below(t, t->beacon_interval_ms / 5 + 1);
        }
        if (t->next_beacon_ms < next) next = t->next_beacon_ms;
    }
    for (size_t i = 0; i < t->static_count; i++) {
        static_peer *s = &t->statics[i];
        if (s->is_self || s->conn) continue;
        if (now >= s->next_attempt_ms) {
            if (peer_connected(t, s) || conn_count(t) >= t->max_peers) s->next_attempt_ms = now + MAX_BACKOFF_MS;
            else open_outbound(t, &s->addr, (int)i);
        }
        if (!s->conn && s->next_attempt_ms < next) next = s->next_attempt_ms;
    }
    for (uint32_t i = 0; i < t->max_peers; i++) {
        conn *c = t->conns[i];
        if (!c) continue;
        /* (Sums, not differences: a connection opened above is younger than `now`.) */
        if (c->state != C_OPEN && now > c->opened_ms + HANDSHAKE_TIMEOUT_MS) conn_close(t, c, MASQ_LOG_DEBUG, "no handshake");
        else if (c->state == C_OPEN && now > c->last_recv_ms + IDLE_TIMEOUT_MS) conn_close(t, c, MASQ_LOG_INFO, "silent too long");
        else if (c->state == C_OPEN && !c->out_head && now >= c->last_send_ms + PING_INTERVAL_MS) enqueue(c, MSG_PING, NULL, 0, NULL, 0);
    }
    return next <= now ? 0 : (int)(next - now);
}

static void accept_some(lan *t) {
    for (int k = 0; k < ACCEPTS_PER_ROUND; k++) {
        struct sockaddr_in addr;
        socklen_t len = sizeof addr;
        int fd = accept(t->listen_fd, (struct sockaddr *)&addr, &len);
        if (fd < 0) return;
        if (set_nonblocking(fd) < 0 || len != sizeof addr || conn_count(t) >= t->max_peers) {
            t->n.connections_refused++;
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_new(t, fd, 0, -1, &addr);
    }
}

static void receive_beacons(lan *t) {
    for (int k = 0; k < BEACONS_PER_ROUND; k++) {
        uint8_t packet[BEACON_HEAD + MAX_ROOMS * TAG_BYTES + 1];
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t r = recvfrom(t->udp_fd, packet, sizeof packet, 0, (struct sockaddr *)&from, &len);
        if (r < 0) return;
        if (len != sizeof from || from.sin_family != AF_INET) continue;
        on_beacon(t, packet, (size_t)r, &from);
    }
}

static void *io_main(void *arg) {
    lan *t = arg;
    char endpoint[32];
    struct sockaddr_in bound = {0};
    bound.sin_family = AF_INET;
    bound.sin_addr = t->bind_addr;
    bound.sin_port = htons(t->bound_port);
    addr_text(&bound, endpoint, sizeof endpoint);
    pthread_mutex_lock(&t->mu);
    emit(t, endpoint, MASQ_TRANSPORT_UP); /* bound: we can send */
    while (t->state == LAN_RUNNING) {
        int timeout = housekeeping(t);
        size_t n = 0;
        t->pollfds[n++] = (struct pollfd){.fd = t->wake[0], .events = POLLIN};
        t->pollfds[n++] = (struct pollfd){.fd = t->listen_fd, .events = POLLIN};
        t->pollfds[n++] = (struct pollfd){.fd = t->udp_fd, .events = POLLIN}; /* -1: ignored */
        for (uint32_t i = 0; i < t->max_peers; i++) {
            conn *c = t->conns[i];
            if (!c) continue;
            short events = c->state == C_CONNECTING ? POLLOUT : (short)(POLLIN | (c->out_head ? POLLOUT : 0));
            t->polled[n] = c;
            t->polled_serial[n] = c->serial;
            t->pollfds[n++] = (struct pollfd){.fd = c->fd, .events = events};
        }
        pthread_mutex_unlock(&t->mu);
        int ready = poll(t->pollfds, (nfds_t)n, timeout);
        pthread_mutex_lock(&t->mu);
        if (ready <= 0 || t->state != LAN_RUNNING) continue;
        if (t->pollfds[0].revents) {
            uint8_t drain[64];
            while (read(t->wake[0], drain, sizeof drain) > 0) {}
        }
        if (t->pollfds[1].revents) accept_some(t);
        if (t->pollfds[2].revents) receive_beacons(t);
        for (size_t k = 3; k < n && t->state == LAN_RUNNING; k++) {
            conn *c = t->polled[k];
            short revents = t->pollfds[k].revents;
            int alive = 0;
            for (uint32_t i = 0; i < t->max_peers; i++) alive |= t->conns[i] == c && c->serial == t->polled_serial[k];
            if (!alive || !revents) continue;
            if (c->state == C_CONNECTING) {
                int error = 0;
                socklen_t len = sizeof error;
                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0 || error) {
                    conn_close(t, c, MASQ_LOG_DEBUG, strerror(error ? error : errno));
                    continue;
                }
                c->state = C_HANDSHAKE;
                conn_write(t, c); /* our HELLO */
                continue;
            }
            if (revents & POLLOUT) {
                uint64_t serial = c->serial;
                conn_write(t, c);
                alive = 0;
                for (uint32_t i = 0; i < t->max_peers; i++) alive |= t->conns[i] == c && c->serial == serial;
                if (!alive) continue;
            }
            if (revents & (POLLIN | POLLHUP | POLLERR)) conn_read(t, c);
        }
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* ---- the vtable ------------------------------------------------------------------- */

static int lan_create(const masq_host *host, const masq_plugin_option *options, size_t option_count, void **out) {
    if (!host || !out || (option_count && !options)) return MASQ_E_INVALID;
    if (!MASQ_HOST_HAS(host, error) || !MASQ_HOST_HAS(host, random_bytes)) return MASQ_E_ABI;
    if (!MASQ_HOST_HAS(host, frame_received) || !MASQ_HOST_HAS(host, peer_event))
        return host->error(host, MASQ_E_ABI, "the host offers no frame delivery (masq_host.frame_received, peer_event)");
    lan *t = calloc(1, sizeof *t);
    if (!t) return host->error(host, MASQ_E_NOMEM, "out of memory");
    t->host = host;
    t->bind_addr.s_addr = htonl(INADDR_ANY);
    t->discovery_addr.s_addr = htonl(INADDR_BROADCAST);
    t->discovery_port = 47474;
    t->beacon_interval_ms = 2000;
    t->max_frame = 1u << 20;
    t->max_peers = 32;
    t->max_queue_bytes = 8u << 20;
    t->listen_fd = t->udp_fd = t->wake[0] = t->wake[1] = -1;
    int status = MASQ_OK;
    for (size_t i = 0; i < option_count && status == MASQ_OK; i++) {
        if (!options[i].key || !options[i].value) status = fail(t, MASQ_E_CONFIG, "an option without key or value");
        else status = apply_option(t, options[i].key, options[i].value);
    }
    if (status == MASQ_OK && t->max_queue_bytes < (size_t)t->max_frame + 5 + TAG_BYTES)
        status = fail(t, MASQ_E_CONFIG, "option max_queue_bytes must hold one frame of max_frame_bytes (%u)", t->max_frame);
    if (status == MASQ_OK && !(t->conns = calloc(t->max_peers, sizeof *t->conns))) status = fail(t, MASQ_E_NOMEM, "out of memory");
    if (status == MASQ_OK && host->random_bytes(host, t->id, ID_BYTES) != MASQ_OK) status = fail(t, MASQ_E_INTERNAL, "no random bytes");
    if (status != MASQ_OK) {
        free(t->conns);
        free(t);
        return status;
    }
    hex(t->id, ID_BYTES, t->name);
    memcpy(&t->rng, t->id, sizeof t->rng);
    t->rng |= 1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->stopped_cv, NULL);
    t->state = LAN_CREATED;
    *out = t;
    return MASQ_OK;
}

static void close_sockets(lan *t) {
    for (uint32_t i = 0; t->conns && i < t->max_peers; i++) {
        conn *c = t->conns[i];
        if (!c) continue;
        c->announced = 0; /* stopped: no callbacks any more */
        c->static_slot = -1;
        conn_close(t, c, MASQ_LOG_DEBUG, NULL);
    }
    int *fds[] = {&t->listen_fd, &t->udp_fd, &t->wake[0], &t->wake[1]};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        if (*fds[i] >= 0) close(*fds[i]);
        *fds[i] = -1;
    }
    free(t->pollfds);
    free(t->polled);
    free(t->polled_serial);
    t->pollfds = NULL;
    t->polled = NULL;
    t->polled_serial = NULL;
}

static int open_sockets(lan *t) {
    int one = 1;
    if (pipe(t->wake) < 0 || set_nonblocking(t->wake[0]) < 0 || set_nonblocking(t->wake[1]) < 0)
        return fail(t, MASQ_E_IO, "pipe: %s", strerror(errno));
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_addr = t->bind_addr;
    addr.sin_port = htons(t->port);
    char text[32];
    addr_text(&addr, text, sizeof text);
    t->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (t->listen_fd < 0 || set_nonblocking(t->listen_fd) < 0 ||
        setsockopt(t->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(t->listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(t->listen_fd, 16) < 0)
        return fail(t, MASQ_E_IO, "cannot listen on %s: %s", text, strerror(errno));
    socklen_t len = sizeof addr;
    if (getsockname(t->listen_fd, (struct sockaddr *)&addr, &len) < 0) return fail(t, MASQ_E_IO, "getsockname: %s", strerror(errno));
    t->bound_port = ntohs(addr.sin_port);
    if (t->discovery_port) {
        /* Several instances on one machine share the port (SO_REUSEADDR);
         * broadcasts reach each of them. */
        struct sockaddr_in any = {0};
        any.sin_family = AF_INET;
        any.sin_addr.s_addr = htonl(INADDR_ANY);
        any.sin_port = htons(t->discovery_port);
        t->udp_fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (t->udp_fd < 0 || set_nonblocking(t->udp_fd) < 0 ||
            setsockopt(t->udp_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            setsockopt(t->udp_fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) < 0 ||
            bind(t->udp_fd, (struct sockaddr *)&any, sizeof any) < 0)
            return fail(t, MASQ_E_IO, "discovery on UDP port %u: %s (option discovery_port, 0 turns discovery off)",
                        (unsigned)t->discovery_port, strerror(errno));
    }
    size_t slots = 3 + t->max_peers;
    t->pollfds = calloc(slots, sizeof *t->pollfds);
    t->polled = calloc(slots, sizeof *t->polled);
    t->polled_serial = calloc(slots, sizeof *t->polled_serial);
    if (!t->pollfds || !t->polled || !t->polled_serial) return fail(t, MASQ_E_NOMEM, "out of memory");
    return MASQ_OK;
}

static int lan_start(void *p) {
    lan *t = p;
    if (!t) return MASQ_E_INVALID;
    pthread_mutex_lock(&t->mu);
    int status = t->state == LAN_CREATED ? open_sockets(t) : fail(t, MASQ_E_INVALID, "start() after start() or stop()");
    if (status == MASQ_OK) {
        t->state = LAN_RUNNING;
        t->next_beacon_ms = 0;
        if (pthread_create(&t->thread, NULL, io_main, t) != 0) {
            t->state = LAN_CREATED;
            status = fail(t, MASQ_E_INTERNAL, "cannot start a thread");
        }
    }
    if (status != MASQ_OK && t->state == LAN_CREATED) close_sockets(t);
    pthread_mutex_unlock(&t->mu);
    return status;
}

static int lan_stop(void *p) {
    lan *t = p;
    if (!t) return MASQ_E_INVALID;
    pthread_mutex_lock(&t->mu);
    if (t->state == LAN_RUNNING || t->state == LAN_STOPPING) {
        if (pthread_equal(pthread_self(), t->thread)) { /* joining ourselves would never return */
            pthread_mutex_unlock(&t->mu);
            return fail(t, MASQ_E_INVALID, "stop() called from one of its own callbacks");
        }
    }
    if (t->state == LAN_RUNNING) {
        t->state = LAN_STOPPING;
        wake_io(t);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->thread, NULL); /* after this, no callback runs */
        pthread_mutex_lock(&t->mu);
        close_sockets(t);
        t->state = LAN_STOPPED;
        pthread_cond_broadcast(&t->stopped_cv);
    } else if (t->state == LAN_CREATED) {
        t->state = LAN_STOPPED;
    }
    while (t->state == LAN_STOPPING) pthread_cond_wait(&t->stopped_cv, &t->mu); /* another thread is stopping it */
    pthread_mutex_unlock(&t->mu);
    return MASQ_OK;
}

static void lan_destroy(void *p) {
    lan *t = p;
    if (!t) return;
    lan_stop(t);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->stopped_cv);
    free(t->conns);
    free(t);
}

/* connect(endpoint): one more static peer, "IPV4:PORT". */
static int lan_connect(void *p, const char *endpoint) {
    lan *t = p;
    if (!t || !endpoint) return MASQ_E_INVALID;
    struct sockaddr_in addr;
    int status = parse_endpoint(t, "connect", endpoint, strlen(endpoint), &addr);
    if (status != MASQ_OK) return t->host->error(t->host, MASQ_E_INVALID, "connect expects IPV4:PORT");
    pthread_mutex_lock(&t->mu);
    status = t->state == LAN_STOPPING || t->state == LAN_STOPPED ? MASQ_E_CLOSED : add_static(t, &addr);
    wake_io(t);
    pthread_mutex_unlock(&t->mu);
    return status == MASQ_E_CLOSED ? fail(t, status, "stopped") : status;
}

static int room_valid(const char *room) {
    size_t len = room ? strlen(room) : 0;
    return len >= 1 && len <= MAX_ROOM_BYTES;
}

static int find_room(lan *t, const char *room) {
    for (int i = 0; i < MAX_ROOMS; i++)
        if ((t->rooms_used & (1u << i)) && strcmp(t->rooms[i], room) == 0) return i;
    return -1;
}

static int lan_join(void *p, const char *room) {
    lan *t = p;
    if (!t) return MASQ_E_INVALID;
    if (!room_valid(room)) return fail(t, MASQ_E_INVALID, "a room is 1-%d bytes", MAX_ROOM_BYTES);
    pthread_mutex_lock(&t->mu);
    int status = MASQ_OK;
    if (t->state == LAN_STOPPING || t->state == LAN_STOPPED) status = MASQ_E_CLOSED;
    else if (find_room(t, room) < 0) {
        int slot = -1;
        for (int i = 0; i < MAX_ROOMS && slot < 0; i++)
            if (!(t->rooms_used & (1u << i))) slot = i;
        if (slot < 0) status = MASQ_E_TOO_LARGE;
        else {
            snprintf(t->rooms[slot], sizeof t->rooms[slot], "%s", room);
            t->rooms_used |= 1u << slot;
            t->rooms_dirty = 1;
            t->next_beacon_ms = 0; /* announce it now */
            wake_io(t);
        }
    }
    pthread_mutex_unlock(&t->mu);
    if (status == MASQ_E_TOO_LARGE) return fail(t, status, "at most %d rooms", MAX_ROOMS);
    return status == MASQ_E_CLOSED ? fail(t, status, "stopped") : status;
}

static int lan_leave(void *p, const char *room) {
    lan *t = p;
    if (!t || !room) return MASQ_E_INVALID;
    pthread_mutex_lock(&t->mu);
    int slot = find_room(t, room);
    if (slot >= 0) {
        /* From now on nothing is sent to or delivered from it. */
        t->rooms_used &= ~(1u << slot);
        for (uint32_t i = 0; i < t->max_peers; i++)
            if (t->conns[i]) t->conns[i]->shared &= ~(1u << slot);
        t->rooms_dirty = 1;
        wake_io(t);
    }
    pthread_mutex_unlock(&t->mu);
    return MASQ_OK;
}

/* send(room, frame): a copy to every connected peer in the room. */
static int lan_send(void *p, const char *destination, const uint8_t *frame, size_t len) {
    lan *t = p;
    if (!t || !destination || (!frame && len)) return MASQ_E_INVALID;
    if (len > t->max_frame) return fail(t, MASQ_E_TOO_LARGE, "frame of %zu bytes exceeds max_frame_bytes (%u)", len, t->max_frame);
    pthread_mutex_lock(&t->mu);
    int slot = t->state == LAN_RUNNING ? find_room(t, destination) : -1;
    size_t queued = 0, full = 0;
    int status = MASQ_OK;
    if (t->state != LAN_RUNNING) status = MASQ_E_CLOSED;
    else if (slot < 0) status = MASQ_E_NOT_FOUND;
    for (uint32_t i = 0; status == MASQ_OK && i < t->max_peers; i++) {
        conn *c = t->conns[i];
        if (!c || c->state != C_OPEN || !(c->shared & (1u << slot))) continue;
        if (len > c->peer_max_frame) t->n.frames_dropped++; /* beyond what that peer accepts */
        else if (c->out_bytes + len + 5 + TAG_BYTES > t->max_queue_bytes ||
                 enqueue(c, MSG_FRAME, c->send_tag[slot], TAG_BYTES, frame, len) != MASQ_OK) {
            t->n.frames_dropped++; /* it cannot keep up */
            full++;
        } else queued++;
    }
    if (queued) wake_io(t);
    pthread_mutex_unlock(&t->mu);
    if (status == MASQ_E_CLOSED) return fail(t, status, "stopped");
    if (status == MASQ_E_NOT_FOUND) return fail(t, status, "not in room %s (join it first)", destination);
    if (full && !queued) return fail(t, MASQ_E_BUSY, "the outbound queue is full (option max_queue_bytes)");
    return MASQ_OK;
}

static int lan_stats(void *p, masq_bytes_sink sink, void *ctx) {
    lan *t = p;
    if (!t || !sink) return MASQ_E_INVALID;
    char json[512];
    pthread_mutex_lock(&t->mu);
    unsigned long long peers = 0, connections = 0;
    for (uint32_t i = 0; i < t->max_peers; i++) {
        if (!t->conns[i]) continue;
        connections++;
        peers += t->conns[i]->announced;
    }
    counters n = t->n;
    int len = snprintf(json, sizeof json,
                       "{\"frames_sent\": %llu, \"frames_received\": %llu, \"frames_rejected\": %llu, \"frames_dropped\": %llu, "
                       "\"peers\": %llu, \"connections\": %llu, \"connects\": %llu, \"connections_refused\": %llu, "
                       "\"beacons_sent\": %llu, \"beacons_received\": %llu, \"beacons_rejected\": %llu, \"port\": %u}",
                       (unsigned long long)n.frames_sent, (unsigned long long)n.frames_received, (unsigned long long)n.frames_rejected,
                       (unsigned long long)n.frames_dropped, peers, connections, (unsigned long long)n.connects,
                       (unsigned long long)n.connections_refused, (unsigned long long)n.beacons_sent,
                       (unsigned long long)n.beacons_received, (unsigned long long)n.beacons_rejected, (unsigned)t->bound_port);
    pthread_mutex_unlock(&t->mu);
    return sink(ctx, (const uint8_t *)json, (size_t)len);
}

static uint64_t lan_max_frame_bytes(void *p) {
    lan *t = p;
    return t ? t->max_frame : 0;
}

static const masq_transport_vtable lan_vtable = {
    .struct_size = sizeof(masq_transport_vtable),
    .flags = MASQ_TRANSPORT_ROOMS | MASQ_TRANSPORT_CONNECT,
    .create = lan_create,
    .destroy = lan_destroy,
    .start = lan_start,
    .stop = lan_stop,
    .listen = NULL,
    .connect = lan_connect,
    .join = lan_join,
    .leave = lan_leave,
    .send = lan_send,
    .stats = lan_stats,
    .disconnect = NULL,
    .max_frame_bytes = lan_max_frame_bytes,
};

static const masq_plugin_descriptor lan_descriptor = {
    sizeof(masq_plugin_descriptor),
    MASQ_PLUGIN_ABI_VERSION,
    MASQ_PLUGIN_TRANSPORT,
    0,
    "lan",
    "1.0.0",
    "devices on one local network: UDP discovery, frames over TCP, no server",
    &lan_vtable,
};

MASQ_PLUGIN_EXPORT const masq_plugin_descriptor *masq_plugin_entry(void) { return &lan_descriptor; }

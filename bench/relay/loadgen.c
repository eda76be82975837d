/* Load generator for the relay benchmark: speaks WebSocket to three brokers
 * with the same client code, so the broker is the only thing that changes.
 *
 *   loadgen fanout --proto masq|nats|mqtt --port P --subs N --rate R
 *                  [--seconds S] [--size BYTES]
 *       One publisher and N subscribers on one room/subject/topic. The
 *       publisher offers R messages per second (R x N deliveries per second)
 *       for S seconds; each message carries its *intended* send time, so a
 *       publisher that falls behind shows up as latency (no coordinated
 *       omission). Prints one line: delivered/s, p50/p99 latency, ratio.
 *
 *   loadgen idle --proto masq|nats|mqtt --port P --conns N
 *       Opens N WebSocket connections, each joined to a room (pairs of
 *       connections share one, like a user's two devices), prints "ready N"
 *       and holds them until stdin closes.
 *
 * Single-threaded epoll; client frames use an all-zero mask (the servers
 * still run their unmasking code) so the generator spends its core on
 * reading, which is where the load is.
 */
#include "../common/wsclient.h"

#include <fcntl.h>
#include <sys/epoll.h>

enum proto { MASQ, NATS, MQTT };
enum state { CONNECTING, UPGRADING, OPEN, READY, DEAD };

typedef struct {
    int fd;
    enum state state;
    int publisher;
    int index;
    buf in;      /* raw bytes from the socket */
    buf stream;  /* NATS/MQTT: protocol bytes carried by WebSocket frames */
    buf out;     /* bytes not yet written */
    uint64_t received;
    uint32_t members; /* masq: last PRESENCE count */
} conn;

static enum proto proto;
static int port, size = 1024;
static uint8_t room[17];  /* masq room: 16 bytes, unique per run */
static char topic[32];    /* NATS subject / MQTT topic, unique per run */
static histogram latency;
static uint64_t delivered, errors;
static uint64_t last_delivery_ns;

static void flush_out(conn *c) {
    if (flush_buf(c->fd, &c->out) < 0) c->state = DEAD;
}

static void record(const uint8_t *payload, size_t n) {
    if (n < 8) { errors++; return; }
    uint64_t sent;
    memcpy(&sent, payload, 8);
    uint64_t t = now_ns();
    histogram_add(&latency, t > sent ? t - sent : 0);
    delivered++;
    last_delivery_ns = t;
}

/* ---- protocol messages ---- */

static void mqtt_packet(conn *c, uint8_t type, const uint8_t *body, size_t n) {
    uint8_t p[8];
    size_t pl = 0;
    p[pl++] = type;
    size_t rem = n;
    do {
        uint8_t d = rem % 128;
        rem /= 128;
        p[pl++] = (uint8_t)(d | (rem ? 0x80 : 0));
    } while (rem);
    buf tmp = {0};
    append(&tmp, p, pl);
    append(&tmp, body, n);
    ws_frame(&c->out, 2, tmp.data, tmp.len);
    free(tmp.data);
}

static void subscribe(conn *c, const char *name) {
    switch (proto) {
    case MASQ: {
        uint8_t f[3 + 64];
        size_t rl = strlen(name) > 64 ? 64 : strlen(name);
        f[0] = 1; f[1] = 1; f[2] = (uint8_t)rl;
        memcpy(f + 3, name, rl);
        ws_frame(&c->out, 2, f, 3 + rl);
        break;
    }
    case NATS: {
        char line[256];
        int n = snprintf(line, sizeof line, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\n%s%s%sPING\r\n",
                         c->publisher ? "" : "SUB ", c->publisher ? "" : name, c->publisher ? "" : " 1\r\n");
        ws_frame(&c->out, 2, line, (size_t)n);
        break;
    }
    case MQTT: {
        uint8_t body[64];
        char id[32];
        int idl = snprintf(id, sizeof id, "lg-%d-%d", getpid(), c->index);
        size_t bl = 0;
        const uint8_t head[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60};
        memcpy(body, head, sizeof head); bl = sizeof head;
        body[bl++] = 0; body[bl++] = (uint8_t)idl;
        memcpy(body + bl, id, (size_t)idl); bl += (size_t)idl;
        mqtt_packet(c, 0x10, body, bl);
        if (!c->publisher) {
            size_t tl = strlen(name);
            uint8_t sub[128];
            size_t sl = 0;
            sub[sl++] = 0; sub[sl++] = 1;
            sub[sl++] = 0; sub[sl++] = (uint8_t)tl;
            memcpy(sub + sl, name, tl); sl += tl;
            sub[sl++] = 0; /* QoS 0 */
            mqtt_packet(c, 0x82, sub, sl);
        }
        break;
    }
    }
}

/* Append one published message (payload starts with its intended send time). */
static void publish(conn *c, uint64_t stamp, uint8_t *payload) {
    memcpy(payload, &stamp, 8);
    switch (proto) {
    case MASQ: {
        uint8_t hdr[3 + 16] = {1, 3, 16};
        memcpy(hdr + 3, room, 16);
        size_t n = sizeof hdr + (size_t)size;
        uint8_t h[8] = {0x82, 0x80 | 126, (uint8_t)(n >> 8), (uint8_t)n, 0, 0, 0, 0};
        append(&c->out, h, 8);
        append(&c->out, hdr, sizeof hdr);
        append(&c->out, payload, (size_t)size);
        break;
    }
    case NATS: {
        char line[64];
        int hl = snprintf(line, sizeof line, "PUB %s %d\r\n", topic, size);
        size_t n = (size_t)hl + (size_t)size + 2;
        uint8_t h[8] = {0x82, 0x80 | 126, (uint8_t)(n >> 8), (uint8_t)n, 0, 0, 0, 0};
        append(&c->out, h, 8);
        append(&c->out, line, (size_t)hl);
        append(&c->out, payload, (size_t)size);
        append(&c->out, "\r\n", 2);
        break;
    }
    case MQTT: {
        size_t tl = strlen(topic);
        size_t rem = 2 + tl + (size_t)size;
        uint8_t p[48];
        size_t pl = 0;
        p[pl++] = 0x30;
        size_t r = rem;
        do {
            uint8_t d = r % 128;
            r /= 128;
            p[pl++] = (uint8_t)(d | (r ? 0x80 : 0));
        } while (r);
        p[pl++] = 0; p[pl++] = (uint8_t)tl;
        memcpy(p + pl, topic, tl); pl += tl;
        size_t n = pl + (size_t)size;
        uint8_t h[8] = {0x82, 0x80 | 126, (uint8_t)(n >> 8), (uint8_t)n, 0, 0, 0, 0};
        append(&c->out, h, 8);
        append(&c->out, p, pl);
        append(&c->out, payload, (size_t)size);
        break;
    }
    }
}

/* ---- inbound parsing ---- */

static void on_masq(conn *c, const uint8_t *p, size_t n) {
    if (n < 3 || p[0] != 1) { errors++; return; }
    if (p[1] == 4) {
        size_t off = 3 + (size_t)p[2];
        if (off > n) { errors++; return; }
        c->received++;
        if (!c->publisher) record(p + off, n - off);
    } else if (p[1] == 6) {
        size_t off = 3 + (size_t)p[2];
        if (off + 4 > n) { errors++; return; }
        /* Counts from joins handled on different relay threads may arrive out
         * of order: the largest seen is the room's size once everyone joined. */
        uint32_t members = (uint32_t)p[off] << 24 | (uint32_t)p[off + 1] << 16 | (uint32_t)p[off + 2] << 8 | p[off + 3];
        if (members > c->members) c->members = members;
        if (c->state == OPEN) c->state = READY;
    } else if (p[1] == 5) {
        errors++;
        if (errors < 5) fprintf(stderr, "relay error: %.*s\n", (int)(n > 5 ? n - 5 : 0), (const char *)p + 5);
    }
}

static void on_nats(conn *c) {
    size_t pos = 0;
    buf *s = &c->stream;
    for (;;) {
        uint8_t *line = s->data + pos;
        size_t avail = s->len - pos;
        uint8_t *eol = memmem(line, avail, "\r\n", 2);
        if (!eol) break;
        size_t ll = (size_t)(eol - line);
        if (ll >= 4 && memcmp(line, "MSG ", 4) == 0) {
            /* MSG <subject> <sid> [reply-to] <#bytes> */
            size_t k = ll;
            while (k > 0 && line[k - 1] != ' ') k--;
            size_t bytes = strtoul((const char *)line + k, NULL, 10);
            if (avail < ll + 2 + bytes + 2) break;
            record(line + ll + 2, bytes);
            c->received++;
            pos += ll + 2 + bytes + 2;
            continue;
        }
        if (ll == 4 && memcmp(line, "PING", 4) == 0) {
            ws_frame(&c->out, 2, "PONG\r\n", 6);
        } else if (ll == 4 && memcmp(line, "PONG", 4) == 0) {
            if (c->state == OPEN) c->state = READY;
        } else if (ll >= 4 && memcmp(line, "-ERR", 4) == 0) {
            errors++;
            fprintf(stderr, "nats: %.*s\n", (int)ll, (const char *)line);
        }
        pos += ll + 2;
    }
    consume(s, pos);
}

static void on_mqtt(conn *c) {
    size_t pos = 0;
    buf *s = &c->stream;
    for (;;) {
        size_t avail = s->len - pos;
        if (avail < 2) break;
        const uint8_t *p = s->data + pos;
        size_t rem = 0, mul = 1, hl = 1;
        int complete = 0;
        while (hl < avail && hl <= 4) {
            rem += (size_t)(p[hl] & 0x7f) * mul;
            mul *= 128;
            if (!(p[hl++] & 0x80)) { complete = 1; break; }
        }
        if (!complete || avail < hl + rem) break;
        const uint8_t *body = p + hl;
        switch (p[0] >> 4) {
        case 3: { /* PUBLISH, QoS 0 */
            if (rem < 2) { errors++; break; }
            size_t tl = (size_t)body[0] << 8 | body[1];
            if (2 + tl > rem) { errors++; break; }
            record(body + 2 + tl, rem - 2 - tl);
            c->received++;
            break;
        }
        case 2: /* CONNACK */
            if (c->publisher && c->state == OPEN) c->state = READY;
            break;
        case 9: /* SUBACK */
            if (c->state == OPEN) c->state = READY;
            break;
        default:
            break;
        }
        pos += hl + rem;
    }
    consume(s, pos);
}

/* Parse complete WebSocket frames out of c->in. */
static void on_frames(conn *c) {
    int opcode;
    const uint8_t *payload;
    size_t n, used;
    while ((used = ws_parse(&c->in, &opcode, &payload, &n)) > 0) {
        switch (opcode) {
        case 0: case 1: case 2:
            if (proto == MASQ) on_masq(c, payload, n);
            else append(&c->stream, payload, n);
            break;
        case 8:
            c->state = DEAD;
            break;
        case 9:
            ws_frame(&c->out, 10, payload, n);
            break;
        default:
            break;
        }
        consume(&c->in, used);
    }
    if (proto == NATS && c->stream.len) on_nats(c);
    if (proto == MQTT && c->stream.len) on_mqtt(c);
}

static int idle_mode;

/* The room, subject or topic a connection joins. */
static const char *sub_name(conn *c) {
    static char name[64];
    if (!idle_mode) {
        if (proto != MASQ) return topic;
        memcpy(name, room, 16);
        name[16] = 0;
        return name;
    }
    const char *fmt = proto == MQTT ? "idle/%d" : proto == NATS ? "idle.%d" : "idle-room-%06d";
    snprintf(name, sizeof name, fmt, c->index / 2);
    return name;
}

static void on_readable(conn *c) {
    for (;;) {
        reserve(&c->in, 256 * 1024);
        ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            c->state = DEAD;
            return;
        }
        if (n == 0) { c->state = DEAD; return; }
        c->in.len += (size_t)n;
        if (c->state == UPGRADING) {
            int up = ws_upgraded(&c->in);
            if (up == 0) continue;
            if (up < 0) {
                c->state = DEAD;
                return;
            }
            c->state = OPEN;
            subscribe(c, sub_name(c));
        }
        if (c->state >= OPEN) on_frames(c);
        if ((size_t)n < 256 * 1024) break;
    }
}

static int epfd;
static conn **conns;
static int nconns;

static conn *open_conn(int index, int publisher) {
    conn *c = calloc(1, sizeof *c);
    c->index = index;
    c->publisher = publisher;
    c->fd = ws_connect(port, 1, proto == MQTT ? "Sec-WebSocket-Protocol: mqtt\r\n" : "", &c->out);
    c->state = UPGRADING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    return c;
}

/* Run the event loop once (timeout in microseconds); returns connections that died. */
static int poll_once_us(long timeout_us) {
    struct epoll_event evs[256];
    struct timespec t = {.tv_sec = timeout_us / 1000000, .tv_nsec = (timeout_us % 1000000) * 1000};
    int n = epoll_pwait2(epfd, evs, 256, &t, NULL);
    int dead = 0;
    for (int i = 0; i < n; i++) {
        conn *c = evs[i].data.ptr;
        if (c->state == DEAD) continue;
        if (evs[i].events & EPOLLIN) on_readable(c);
        if (evs[i].events & (EPOLLERR | EPOLLHUP)) c->state = DEAD;
        if (c->state != DEAD) flush_out(c);
        if (c->state == DEAD) dead++;
    }
    return dead;
}

static int poll_once(int timeout_ms) { return poll_once_us(timeout_ms * 1000L); }

static int all_ready(void) {
    for (int i = 0; i < nconns; i++)
        if (conns[i]->state != READY) return 0;
    return 1;
}

static void usage(void) {
    fprintf(stderr, "usage: loadgen fanout --proto masq|nats|mqtt --port P --subs N --rate R [--seconds S] [--size B]\n"
                    "       loadgen idle --proto masq|nats|mqtt --port P --conns N\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    int fanout = strcmp(argv[1], "fanout") == 0;
    idle_mode = strcmp(argv[1], "idle") == 0;
    if (!fanout && !idle_mode) usage();
    int subs = 10, conns_wanted = 1000;
    double rate = 1000, seconds = 5;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--proto")) proto = !strcmp(v, "masq") ? MASQ : !strcmp(v, "nats") ? NATS : !strcmp(v, "mqtt") ? MQTT : (usage(), MASQ);
        else if (!strcmp(k, "--port")) port = atoi(v);
        else if (!strcmp(k, "--subs")) subs = atoi(v);
        else if (!strcmp(k, "--rate")) rate = atof(v);
        else if (!strcmp(k, "--seconds")) seconds = atof(v);
        else if (!strcmp(k, "--size")) size = atoi(v);
        else if (!strcmp(k, "--conns")) conns_wanted = atoi(v);
        else usage();
    }
    if (port <= 0 || size < 8 || size > 60000 || subs < 1 || rate <= 0) usage();
    snprintf((char *)room, sizeof room, "bench-%010d", (int)getpid());
    snprintf(topic, sizeof topic, proto == MQTT ? "bench/%d" : "bench.%d", (int)getpid());
    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");

    int total = idle_mode ? conns_wanted : subs + 1;
    conns = calloc((size_t)total, sizeof *conns);
    /* Open in waves so the listen backlog never overflows. */
    uint64_t deadline = now_ns() + 20ull * 1000000000ull;
    while (nconns < total || !all_ready()) {
        int pending = 0;
        for (int i = 0; i < nconns; i++) pending += conns[i]->state != READY;
        while (nconns < total && pending < 200) {
            conns[nconns] = open_conn(nconns, !idle_mode && nconns == 0);
            nconns++;
            pending++;
        }
        if (poll_once(10) > 0) {
            fprintf(stderr, "a connection closed during set-up\n");
            return 1;
        }
        if (now_ns() > deadline) {
            int counts[5] = {0};
            for (int i = 0; i < nconns; i++) counts[conns[i]->state]++;
            fprintf(stderr, "set-up timed out: %d connecting, %d upgrading, %d open, %d ready\n",
                    counts[CONNECTING], counts[UPGRADING], counts[OPEN], counts[READY]);
            return 1;
        }
    }
    if (idle_mode) {
        printf("ready %d\n", nconns);
        fflush(stdout);
        char b[64];
        /* Keep answering pings while waiting for stdin to close. */
        fcntl(0, F_SETFL, O_NONBLOCK);
        for (;;) {
            ssize_t r = read(0, b, sizeof b);
            if (r == 0 || (r < 0 && errno != EAGAIN)) break;
            poll_once(100);
        }
        return 0;
    }
    /* masq: wait until the publisher has seen every member join. */
    while (proto == MASQ && conns[0]->members < (uint32_t)total) {
        poll_once(10);
        if (now_ns() > deadline) { fprintf(stderr, "room never filled (%u members)\n", conns[0]->members); return 1; }
    }
    /* Let subscriptions settle (NATS/MQTT acks come before interest propagates on some brokers). */
    for (int i = 0; i < 20; i++) poll_once(10);

    conn *pub = conns[0];
    uint8_t *payload = calloc(1, (size_t)size);
    for (int i = 8; i < size; i++) payload[i] = (uint8_t)(i * 7);
    uint64_t count = (uint64_t)(rate * seconds);
    uint64_t start = now_ns(), sent = 0, behind = 0;
    double interval = 1e9 / rate;
    while (sent < count) {
        uint64_t t = now_ns();
        uint64_t due = (uint64_t)((double)(t - start) / interval) + 1;
        if (due > count) due = count;
        while (sent < due) {
            if (pub->out.len > 8u << 20) { behind++; break; }
            publish(pub, start + (uint64_t)((double)sent * interval), payload);
            sent++;
        }
        flush_out(pub);
        if (poll_once_us(100) > 0) { fprintf(stderr, "a connection closed during the run\n"); break; }
    }
    uint64_t end_send = now_ns();
    uint64_t expected = sent * (uint64_t)subs;
    uint64_t drain_until = end_send + 2000000000ull;
    while (delivered < expected && now_ns() < drain_until) {
        flush_out(pub);
        poll_once(10);
    }
    double span = (double)((last_delivery_ns > start ? last_delivery_ns : end_send) - start) / 1e9;
    printf("proto=%s subs=%d offered=%.0f sent=%llu delivered=%llu rate=%.0f p50_ms=%.3f p99_ms=%.3f ratio=%.4f errors=%llu\n",
           proto == MASQ ? "masq" : proto == NATS ? "nats" : "mqtt", subs, rate * subs, (unsigned long long)sent,
           (unsigned long long)delivered, (double)delivered / span, histogram_ms(&latency, 0.50), histogram_ms(&latency, 0.99),
           expected ? (double)delivered / (double)expected : 0.0, (unsigned long long)errors);
    return 0;
}

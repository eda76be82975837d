/* Pieces of a WebSocket client shared by the benchmarks' load generators
 * (bench/relay/loadgen.c, bench/localws/appbench.c): growable buffers,
 * client frames (zero mask: the servers still run their unmasking code),
 * frame parsing, a loopback connect with the HTTP upgrade, a latency
 * histogram. Header-only; each generator includes it once. */
#ifndef MASQ_BENCH_WSCLIENT_H
#define MASQ_BENCH_WSCLIENT_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uint8_t *data;
    size_t len, cap;
} buf;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void reserve(buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    b->data = realloc(b->data, cap);
    if (!b->data) die("realloc");
    b->cap = cap;
}

static void append(buf *b, const void *p, size_t n) {
    reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void consume(buf *b, size_t n) {
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

/* A client-to-server WebSocket frame with a zero mask. */
static void ws_frame(buf *b, int opcode, const void *payload, size_t n) {
    uint8_t h[14];
    size_t hl = 0;
    h[hl++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        h[hl++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        h[hl++] = 0x80 | 126;
        h[hl++] = (uint8_t)(n >> 8);
        h[hl++] = (uint8_t)n;
    } else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) h[hl++] = (uint8_t)(n >> (8 * i));
    }
    memset(h + hl, 0, 4);
    hl += 4;
    append(b, h, hl);
    append(b, payload, n);
}

/* Write what `out` holds; 0 = all written or would block, -1 = the peer is gone. */
static int flush_buf(int fd, buf *out) {
    while (out->len) {
        ssize_t n = send(fd, out->data, out->len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            return -1;
        }
        consume(out, (size_t)n);
    }
    return 0;
}

/* One complete server frame at the start of `in`: its opcode, payload and
 * size on the wire; 0 if more bytes are needed. */
static size_t ws_parse(const buf *in, int *opcode, const uint8_t **payload, size_t *length) {
    if (in->len < 2) return 0;
    const uint8_t *p = in->data;
    uint64_t n = p[1] & 0x7f;
    size_t hl = 2;
    if (n == 126) {
        if (in->len < 4) return 0;
        n = (uint64_t)p[2] << 8 | p[3];
        hl = 4;
    } else if (n == 127) {
        if (in->len < 10) return 0;
        n = 0;
        for (int i = 0; i < 8; i++) n = n << 8 | p[2 + i];
        hl = 10;
    }
    if (p[1] & 0x80) hl += 4; /* servers do not mask; tolerate it anyway */
    if (in->len < hl + n) return 0;
    *opcode = p[0] & 0x0f;
    *payload = p + hl;
    *length = (size_t)n;
    return hl + (size_t)n;
}

/* A TCP connection to 127.0.0.1:port (non-blocking when asked), with the
 * HTTP upgrade request queued in `out`. */
static int ws_connect(int port, int nonblocking, const char *extra_headers, buf *out) {
    int fd = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) die("connect");
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     port, extra_headers ? extra_headers : "");
    append(out, req, (size_t)n);
    return fd;
}

/* After the upgrade response arrived in `in`: 1 and the response consumed
 * when it is "101", 0 when more bytes are needed, -1 when refused. */
static int ws_upgraded(buf *in) {
    uint8_t *end = memmem(in->data, in->len, "\r\n\r\n", 4);
    if (!end) return 0;
    if (in->len < 12 || memcmp(in->data + 9, "101", 3) != 0) {
        fprintf(stderr, "upgrade refused: %.*s\n", (int)(end - in->data), (const char *)in->data);
        return -1;
    }
    consume(in, (size_t)(end - in->data) + 4);
    return 1;
}

/* Latencies in 10 us buckets up to 10 s (the last bucket is "more"). */
typedef struct {
    uint64_t bucket[1000001];
    uint64_t count;
} histogram;

static void histogram_add(histogram *h, uint64_t ns) {
    uint64_t b = ns / 10000;
    if (b > 1000000) b = 1000000;
    h->bucket[b]++;
    h->count++;
}

/* The q-quantile in milliseconds (bucket midpoint). */
static double histogram_ms(const histogram *h, double q) {
    if (!h->count) return 0;
    uint64_t want = (uint64_t)(q * (double)h->count), seen = 0;
    for (size_t i = 0; i <= 1000000; i++) {
        seen += h->bucket[i];
        if (seen > want) return (double)(i * 10 + 5) / 1000.0;
    }
    return 10000.0;
}

#endif

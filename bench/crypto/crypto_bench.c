/*
 * bench/crypto — through masq.h: session seal and open throughput for 1 KiB
 * and 16 KiB messages, ratchet steps per second (a round trip that forces a
 * DH ratchet step), handshakes per second (XXpsk3 and KK); beside, from the
 * same run, the same library's per-message raw AEAD (masq_crypto_aead_seal)
 * and `openssl speed -evp chacha20-poly1305` (streaming) figures, as ratios.
 *
 * usage: crypto_bench [seconds per measurement = 1]   (through bench/crypto/run.sh)
 */
#define _POSIX_C_SOURCE 200809L
#include "masq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "crypto_bench: %s: %s\n", what, masq_last_error());
    exit(1);
}

static void pair_sessions(masq_session **alice, masq_session **bob) {
    uint8_t a[32], b[32], a_pub[32], b_pub[32];
    masq_crypto_random(a, 32);
    masq_crypto_random(b, 32);
    masq_crypto_x25519_public(a, a_pub);
    masq_crypto_x25519_public(b, b_pub);
    masq_session_options io = {sizeof io, "KK", MASQ_ROLE_INITIATOR, NULL, 0, a, b_pub, 32, NULL, 0};
    masq_session_options ro = {sizeof ro, "KK", MASQ_ROLE_RESPONDER, NULL, 0, b, a_pub, 32, NULL, 0};
    if (masq_session_new(NULL, &io, alice) || masq_session_new(NULL, &ro, bob)) die("session_new");
    uint8_t *m, *p;
    size_t ml, pl;
    if (masq_session_write_handshake(*alice, NULL, 0, &m, &ml) || masq_session_read_handshake(*bob, m, ml, &p, &pl)) die("hs1");
    masq_free(m); masq_free(p);
    if (masq_session_write_handshake(*bob, NULL, 0, &m, &ml) || masq_session_read_handshake(*alice, m, ml, &p, &pl)) die("hs2");
    masq_free(m); masq_free(p);
    /* the responder speaks first; afterwards both can send */
    if (masq_session_seal(*bob, NULL, 0, (const uint8_t *)"x", 1, &m, &ml) || masq_session_open(*alice, NULL, 0, m, ml, &p, &pl)) die("first");
    masq_free(m); masq_free(p);
}

/* seal MB/s and open MB/s for one size */
static void session_throughput(size_t size, double seconds, double *seal_mbs, double *open_mbs) {
    masq_session *alice, *bob;
    pair_sessions(&alice, &bob);
    uint8_t *plain = calloc(size, 1);
    enum { BATCH = 8 }; /* small batches: the sealed messages stay in cache, as in a real send loop */
    uint8_t *sealed[BATCH];
    size_t sealed_len[BATCH];
    double seal_time = 0, open_time = 0, bytes = 0;
    double end = now() + seconds;
    while (now() < end) {
        double t0 = now();
        for (int i = 0; i < BATCH; i++)
            if (masq_session_seal(alice, NULL, 0, plain, size, &sealed[i], &sealed_len[i])) die("seal");
        double t1 = now();
        for (int i = 0; i < BATCH; i++) {
            uint8_t *p;
            size_t pl;
            if (masq_session_open(bob, NULL, 0, sealed[i], sealed_len[i], &p, &pl)) die("open");
            masq_free(p);
        }
        double t2 = now();
        for (int i = 0; i < BATCH; i++) masq_free(sealed[i]);
        seal_time += t1 - t0;
        open_time += t2 - t1;
        bytes += (double)size * BATCH;
    }
    *seal_mbs = bytes / seal_time / 1e6;
    *open_mbs = bytes / open_time / 1e6;
    free(plain);
    masq_session_free(alice);
    masq_session_free(bob);
}

static double raw_aead(size_t size, double seconds) {
    uint8_t key[32], nonce[12] = {0};
    masq_crypto_random(key, 32);
    uint8_t *plain = calloc(size, 1), *out = malloc(size + 16);
    double bytes = 0, t0 = now(), end = t0 + seconds;
    while (now() < end) {
        for (int i = 0; i < 256; i++) masq_crypto_aead_seal(MASQ_AEAD_CHACHA20_POLY1305, key, nonce, NULL, 0, plain, size, out);
        bytes += (double)size * 256;
    }
    double mbs = bytes / (now() - t0) / 1e6;
    free(plain);
    free(out);
    return mbs;
}

static double ratchet_steps(double seconds) {
    masq_session *alice, *bob;
    pair_sessions(&alice, &bob);
    long steps = 0;
    double t0 = now(), end = t0 + seconds;
    while (now() < end) {
        /* alternate senders: every message carries a new ratchet key -> one DH step each way */
        uint8_t *m, *p;
        size_t ml, pl;
        masq_session *from = steps % 2 ? bob : alice, *to = steps % 2 ? alice : bob;
        if (masq_session_seal(from, NULL, 0, (const uint8_t *)"ping", 4, &m, &ml) || masq_session_open(to, NULL, 0, m, ml, &p, &pl)) die("step");
        masq_free(m);
        masq_free(p);
        steps++;
    }
    double rate = (double)steps / (now() - t0);
    masq_session_free(alice);
    masq_session_free(bob);
    return rate;
}

static double handshakes(const char *pattern, double seconds) {
    uint8_t a[32], b[32], a_pub[32], b_pub[32], psk[32];
    masq_crypto_random(a, 32);
    masq_crypto_random(b, 32);
    masq_crypto_random(psk, 32);
    masq_crypto_x25519_public(a, a_pub);
    masq_crypto_x25519_public(b, b_pub);
    int with_psk = strstr(pattern, "psk") != NULL, pre = strcmp(pattern, "KK") == 0;
    long count = 0;
    double t0 = now(), end = t0 + seconds;
    while (now() < end) {
        masq_session_options io = {sizeof io, pattern, MASQ_ROLE_INITIATOR, NULL, 0, a, pre ? b_pub : NULL, pre ? 32 : 0, with_psk ? psk : NULL, with_psk ? 32 : 0};
        masq_session_options ro = {sizeof ro, pattern, MASQ_ROLE_RESPONDER, NULL, 0, b, pre ? a_pub : NULL, pre ? 32 : 0, with_psk ? psk : NULL, with_psk ? 32 : 0};
        masq_session *i, *r;
        if (masq_session_new(NULL, &io, &i) || masq_session_new(NULL, &ro, &r)) die("handshake new");
        masq_session *turn[2] = {i, r};
        int state = MASQ_SESSION_HANDSHAKING, k = 0;
        while (state == MASQ_SESSION_HANDSHAKING) {
            uint8_t *m, *p;
            size_t ml, pl;
            if (masq_session_write_handshake(turn[k % 2], NULL, 0, &m, &ml) || masq_session_read_handshake(turn[(k + 1) % 2], m, ml, &p, &pl)) die("handshake");
            masq_free(m);
            masq_free(p);
            masq_session_status(i, &state, NULL, NULL);
            k++;
        }
        masq_session_free(i);
        masq_session_free(r);
        count++;
    }
    return (double)count / (now() - t0);
}

/* `openssl speed -evp chacha20-poly1305` for 1 KiB and 16 KiB, this run. */
static int openssl_speed(double *kib1, double *kib16) {
    FILE *p = popen("openssl speed -evp chacha20-poly1305 -seconds 1 -bytes 1024 2>/dev/null | tail -1; "
                    "openssl speed -evp chacha20-poly1305 -seconds 1 -bytes 16384 2>/dev/null | tail -1", "r");
    if (!p) return -1;
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, p)) {
        char *k = strrchr(line, ' ');
        double v = k ? atof(k + 1) : 0; /* in 1000s of bytes per second, e.g. "2950466.72k" */
        if (v > 0) { if (found == 0) *kib1 = v * 1000 / 1e6; else *kib16 = v * 1000 / 1e6; found++; }
    }
    pclose(p);
    return found == 2 ? 0 : -1;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    double ossl1 = 0, ossl16 = 0;
    int have_openssl = openssl_speed(&ossl1, &ossl16) == 0;
    printf("crypto bench (%.1f s per figure); MB/s = 10^6 bytes/s\n\n", seconds);
    printf("%-10s %12s %12s %14s %16s %10s %10s\n", "size", "seal MB/s", "open MB/s", "raw AEAD MB/s", "openssl speed", "seal/raw", "seal/speed");
    size_t sizes[2] = {1024, 16384};
    for (int k = 0; k < 2; k++) {
        double seal, open, raw = raw_aead(sizes[k], seconds);
        session_throughput(sizes[k], seconds, &seal, &open);
        double speed = k == 0 ? ossl1 : ossl16;
        printf("%-10zu %12.0f %12.0f %14.0f %16.0f %9.2fx %9.2fx\n", sizes[k], seal, open, raw, have_openssl ? speed : 0, seal / raw,
               have_openssl ? seal / speed : 0);
    }
    printf("\nratchet steps/s (a DH ratchet step per message, alternating senders): %.0f\n", ratchet_steps(seconds));
    printf("handshakes/s: KK %.0f, XXpsk3 %.0f\n", handshakes("KK", seconds), handshakes("XXpsk3", seconds));
    printf("(target: session seal >= 0.85x OpenSSL's raw AEAD at 16 KiB)\n");
    return 0;
}

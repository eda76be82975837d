/*
 * security_test — the encryption-at-rest, device, pairing, session and
 * primitive parts of masq.h, from C, with their error paths.
 *
 * usage: security_test     (MASQ_PLUGIN_PATH must reach the sqlite plugin)
 */
#define _DEFAULT_SOURCE
#include "masq.h"
#include "masq_crypto.h" /* the unstable primitives */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static uint8_t unhex_buffer[4][256];
static const uint8_t *unhex(int slot, const char *hex) {
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &unhex_buffer[slot][i]);
    return unhex_buffer[slot];
}

static masq_store *open_dir(const char *dir) {
    char config[512];
    snprintf(config, sizeof config, "{\"data_dir\": \"%s\", \"security\": {\"scrypt_log_n\": 10}}", dir);
    masq_store *s = NULL;
    CHECK_RC(masq_open_config(config, NULL, &s), MASQ_OK);
    return s;
}

static masq_store *open_store_in(const char *label, char dir[25]) {
    strcpy(dir, "/tmp/masq-sectest-XXXXXX");
    if (!mkdtemp(dir)) exit(2);
    remember_dir(dir);
    masq_store *s = open_dir(dir);
    CHECK_RC(masq_set_device_name(s, label), MASQ_OK);
    return s;
}

static masq_store *open_store(const char *label) {
    char dir[25];
    return open_store_in(label, dir);
}

static void test_primitives(void) {
    uint8_t out[64], shared[32];
    /* RFC 7748 6.1 */
    CHECK_RC(masq_crypto_x25519_public(unhex(0, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"), out), MASQ_OK);
    CHECK(memcmp(out, unhex(1, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"), 32) == 0);
    CHECK_RC(masq_crypto_x25519(unhex(0, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
                                unhex(1, "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"), shared), MASQ_OK);
    CHECK(memcmp(shared, unhex(2, "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"), 32) == 0);
    uint8_t zero[32] = {0};
    CHECK_RC(masq_crypto_x25519(unhex(0, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"), zero, shared), MASQ_E_INVALID);
    /* RFC 5869 case 1 */
    CHECK_RC(masq_crypto_hkdf_sha256(unhex(0, "000102030405060708090a0b0c"), 13, unhex(1, "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"), 22,
                                     unhex(2, "f0f1f2f3f4f5f6f7f8f9"), 10, out, 42), MASQ_OK);
    CHECK(memcmp(out, unhex(3, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"), 42) == 0);
    CHECK_RC(masq_crypto_hkdf_sha256(NULL, 0, out, 1, NULL, 0, out, 9000), MASQ_E_INVALID);
    /* AEAD round trip, tamper, both algorithms */
    uint8_t key[32], nonce[12], sealed[21], opened[5];
    CHECK_RC(masq_crypto_random(key, 32), MASQ_OK);
    CHECK_RC(masq_crypto_random(nonce, 12), MASQ_OK);
    for (int alg = 1; alg <= 2; alg++) {
        CHECK_RC(masq_crypto_aead_seal(alg, key, nonce, B("ad"), 2, B("hello"), 5, sealed), MASQ_OK);
        CHECK_RC(masq_crypto_aead_open(alg, key, nonce, B("ad"), 2, sealed, 21, opened), MASQ_OK);
        CHECK(memcmp(opened, "hello", 5) == 0);
        sealed[3] ^= 1;
        CHECK_RC(masq_crypto_aead_open(alg, key, nonce, B("ad"), 2, sealed, 21, opened), MASQ_E_BAD_SIGNATURE);
    }
    CHECK_RC(masq_crypto_aead_seal(9, key, nonce, NULL, 0, B("x"), 1, sealed), MASQ_E_INVALID);
    CHECK_RC(masq_crypto_aead_open(1, key, nonce, NULL, 0, sealed, 10, opened), MASQ_E_BAD_SIGNATURE);
    /* Ed25519 (RFC 8032 test 1) */
    uint8_t sig[64];
    CHECK_RC(masq_crypto_ed25519_sign(unhex(0, "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"), NULL, 0, sig), MASQ_OK);
    CHECK(memcmp(sig, unhex(1, "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"), 64) == 0);
    CHECK_RC(masq_crypto_ed25519_verify(unhex(2, "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"), NULL, 0, sig, 64), MASQ_OK);
    CHECK_RC(masq_crypto_ed25519_verify(unhex(2, "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"), B("x"), 1, sig, 64), MASQ_E_BAD_SIGNATURE);
    CHECK_RC(masq_crypto_x25519(NULL, zero, shared), MASQ_E_INVALID);
}

static void test_protection(void) {
    masq_store *s = open_store("prot");
    int prot = -1, locked = -1;
    CHECK_RC(masq_protection(s, &prot, &locked), MASQ_OK);
    CHECK(prot == 0 && locked == 0);
    CHECK_RC(masq_put(s, "app", B("k"), 1, B("secret"), 6), MASQ_OK);
    CHECK_RC(masq_unlock(s, B("x"), 1), MASQ_E_INVALID);
    CHECK_RC(masq_set_passphrase(s, NULL, 0, NULL, 0), MASQ_E_INVALID);
    CHECK_RC(masq_set_passphrase(s, NULL, 0, B("pw1"), 3), MASQ_OK);
    CHECK_RC(masq_protection(s, &prot, &locked), MASQ_OK);
    CHECK(prot == 1 && locked == 0);
    CHECK_RC(masq_lock(s), MASQ_OK);
    uint8_t *v;
    size_t n;
    CHECK_RC(masq_get(s, "app", B("k"), 1, &v, &n), MASQ_E_DENIED);
    CHECK(strstr(masq_last_error(), "locked") != NULL);
    char *json = NULL;
    CHECK_RC(masq_device_info(s, &json), MASQ_E_DENIED);
    CHECK_RC(masq_unlock(s, B("pw2"), 3), MASQ_E_DENIED);
    CHECK_RC(masq_set_passphrase(s, B("pw1"), 3, B("pw2"), 3), MASQ_E_DENIED); /* still locked */
    CHECK_RC(masq_unlock(s, B("pw1"), 3), MASQ_OK);
    CHECK_RC(masq_get(s, "app", B("k"), 1, &v, &n), MASQ_OK);
    CHECK(n == 6 && memcmp(v, "secret", 6) == 0);
    masq_free(v);
    CHECK_RC(masq_set_passphrase(s, B("wrong"), 5, B("pw2"), 3), MASQ_E_DENIED);
    CHECK_RC(masq_set_passphrase(s, B("pw1"), 3, B("pw2"), 3), MASQ_OK);
    CHECK_RC(masq_unlock(s, B("pw1"), 3), MASQ_E_DENIED);
    CHECK_RC(masq_unlock(s, B("pw2"), 3), MASQ_OK);
    CHECK_RC(masq_set_passphrase(s, B("pw2"), 3, NULL, 0), MASQ_OK);
    CHECK_RC(masq_protection(s, &prot, NULL), MASQ_OK);
    CHECK(prot == 0);
    CHECK_RC(masq_unlock(NULL, B("x"), 1), MASQ_E_INVALID);
    CHECK_RC(masq_close(s), MASQ_OK);
}

/* Run a pairing between two stores through the C API, passing frames by hand. */
static int pair(masq_store *offerer, masq_store *joiner, int corrupt_at) {
    char *link = NULL;
    masq_pairing *o = NULL, *j = NULL;
    if (masq_pairing_offer(offerer, "tcp:127.0.0.1:1", 60, &link, &o) != MASQ_OK) return -1;
    CHECK(strncmp(link, "masq://pair/", 12) == 0 && strchr(link, '#') != NULL);
    int rc = masq_pairing_join(joiner, link, &j);
    masq_free(link);
    if (rc != MASQ_OK) return -1;
    uint8_t *frame = NULL, *reply = NULL;
    size_t len = 0, reply_len = 0;
    int paired_o = 0, paired_j = 0, step = 0, result = -1;
    CHECK_RC(masq_pairing_start(j, &frame, &len), MASQ_OK);
    for (;;) {
        if (step++ == corrupt_at) frame[len - 1] ^= 1;
        rc = masq_pairing_receive(o, frame, len, &reply, &reply_len, &paired_o);
        masq_free(frame);
        frame = NULL;
        if (rc != MASQ_OK) {
            if (reply) { /* the refusal reaches the joiner */
                CHECK_RC(masq_pairing_receive(j, reply, reply_len, &frame, &len, &paired_j), MASQ_E_DENIED);
                CHECK(strstr(masq_last_error(), "refused") != NULL);
                masq_free(reply);
            }
            break;
        }
        if (step++ == corrupt_at) reply[reply_len - 1] ^= 1;
        rc = masq_pairing_receive(j, reply, reply_len, &frame, &len, &paired_j);
        masq_free(reply);
        reply = NULL;
        if (rc != MASQ_OK) break;
        if (paired_o && paired_j) {
            result = 0;
            break;
        }
    }
    masq_free(frame);
    if (result == 0) {
        char *peer = NULL;
        CHECK_RC(masq_pairing_peer(o, &peer), MASQ_OK);
        CHECK(peer && strstr(peer, "\"fingerprint\"") != NULL);
        masq_free(peer);
    }
    masq_pairing_free(o);
    masq_pairing_free(j);
    return result;
}

static void device_id(masq_store *s, char out[21]) {
    char *json = NULL;
    CHECK_RC(masq_device_info(s, &json), MASQ_OK);
    const char *p = json ? strstr(json, "\"device_id\": \"") : NULL;
    if (p) memcpy(out, p + 14, 20);
    out[20] = 0;
    masq_free(json);
}

/* A reopened store (it may be a copy restored from a backup) seals nothing
 * before its session is renewed; renewal is a KK handshake the caller
 * carries, and a replayed first message is refused. */
static void test_renewal_before_sealing(void) {
    char a_dir[25];
    masq_store *a = open_store_in("alpha", a_dir), *b = open_store("beta");
    char a_id[21], b_id[21];
    device_id(a, a_id);
    device_id(b, b_id);
    CHECK(pair(a, b, -1) == 0);
    CHECK_RC(masq_close(a), MASQ_OK);
    a = open_dir(a_dir);
    uint8_t *m = NULL, *p = NULL, *first = NULL, *answer = NULL;
    size_t ml = 0, pl = 0, first_len = 0, answer_len = 0;
    CHECK_RC(masq_seal_for_device(a, b_id, NULL, 0, B("x"), 1, &m, &ml), MASQ_E_DENIED);
    CHECK(strstr(masq_last_error(), "renew") != NULL);

    CHECK_RC(masq_device_renew_complete(a, b_id, B("x"), 1), MASQ_E_NOT_FOUND);      /* nothing waits */
    CHECK_RC(masq_device_renew_begin(a, b_id, &first, &first_len), MASQ_OK);
    CHECK_RC(masq_device_renew_answer(b, a_id, first, first_len, &answer, &answer_len), MASQ_OK);
    uint8_t forged[256];
    memcpy(forged, answer, answer_len < sizeof forged ? answer_len : sizeof forged);
    forged[answer_len / 2] ^= 1;
    CHECK_RC(masq_device_renew_complete(a, b_id, forged, answer_len), MASQ_E_BAD_SIGNATURE);   /* a forged answer... */
    CHECK_RC(masq_device_renew_complete(a, b_id, answer, answer_len), MASQ_OK);               /* ...spoils nothing */
    /* The answering side speaks first; then both ways. */
    CHECK_RC(masq_seal_for_device(b, a_id, NULL, 0, B("hello"), 5, &m, &ml), MASQ_OK);
    CHECK_RC(masq_open_from_device(a, b_id, NULL, 0, m, ml, &p, &pl), MASQ_OK);
    CHECK(pl == 5 && memcmp(p, "hello", 5) == 0);
    masq_free(m); masq_free(p);
    CHECK_RC(masq_seal_for_device(a, b_id, NULL, 0, B("back"), 4, &m, &ml), MASQ_OK);
    CHECK_RC(masq_open_from_device(b, a_id, NULL, 0, m, ml, &p, &pl), MASQ_OK);
    masq_free(m); masq_free(p);
    /* A recorded first message cannot be replayed. */
    CHECK_RC(masq_device_renew_answer(b, a_id, first, first_len, &answer, &answer_len), MASQ_E_DENIED);
    CHECK_RC(masq_device_renew_begin(a, "00000000000000000000", &first, &first_len), MASQ_E_NOT_FOUND);
    CHECK_RC(masq_device_renew_begin(a, "0000", &first, &first_len), MASQ_E_INVALID);
    CHECK_RC(masq_device_renew_begin(a, b_id, NULL, NULL), MASQ_E_INVALID);
    masq_free(first);
    masq_free(answer);
    CHECK_RC(masq_close(a), MASQ_OK);
    CHECK_RC(masq_close(b), MASQ_OK);
}

static void test_pairing_and_devices(void) {
    masq_store *a = open_store("alpha"), *b = open_store("beta");
    char a_id[21], b_id[21];
    device_id(a, a_id);
    device_id(b, b_id);
    CHECK(strlen(a_id) == 20 && strcmp(a_id, b_id) != 0);

    for (int corrupt = 0; corrupt < 4; corrupt++) CHECK(pair(a, b, corrupt) != 0);
    char *json = NULL;
    CHECK_RC(masq_devices(b, &json), MASQ_OK);
    CHECK(json && strcmp(json, "[]") == 0);
    masq_free(json);

    CHECK(pair(a, b, -1) == 0);
    CHECK_RC(masq_devices(a, &json), MASQ_OK);
    CHECK(json && strstr(json, b_id) && strstr(json, "\"name\": \"beta\"") && strstr(json, "\"paired_at\""));
    masq_free(json);

    uint8_t *m = NULL, *p = NULL;
    size_t ml = 0, pl = 0;
    CHECK_RC(masq_seal_for_device(a, b_id, B("ad"), 2, B("to beta"), 7, &m, &ml), MASQ_OK);
    CHECK_RC(masq_open_from_device(b, a_id, B("ad"), 2, m, ml, &p, &pl), MASQ_OK);
    CHECK(pl == 7 && memcmp(p, "to beta", 7) == 0);
    masq_free(p);
    CHECK_RC(masq_open_from_device(b, a_id, B("ad"), 2, m, ml, &p, &pl), MASQ_E_BAD_SIGNATURE); /* replay */
    masq_free(m);
    CHECK_RC(masq_seal_for_device(a, "0000", NULL, 0, B("x"), 1, &m, &ml), MASQ_E_NOT_FOUND);
    CHECK_RC(masq_device_remove(a, b_id), MASQ_OK);
    CHECK_RC(masq_device_remove(a, b_id), MASQ_E_NOT_FOUND);
    CHECK_RC(masq_seal_for_device(a, b_id, NULL, 0, B("x"), 1, &m, &ml), MASQ_E_NOT_FOUND);
    CHECK_RC(masq_pairing_join(a, "masq://pair/x#y", NULL), MASQ_E_INVALID);
    masq_pairing *bad = NULL;
    CHECK_RC(masq_pairing_join(a, "https://example.com", &bad), MASQ_E_INVALID);
    CHECK(bad == NULL);

    uint8_t *pgm = NULL;
    size_t pgm_len = 0;
    CHECK_RC(masq_qr_pgm("masq://pair/abc#def", 4, &pgm, &pgm_len), MASQ_OK);
    CHECK(pgm && pgm_len > 100 && memcmp(pgm, "P5\n", 3) == 0);
    masq_free(pgm);
    CHECK_RC(masq_qr_pgm("x", 0, &pgm, &pgm_len), MASQ_E_INVALID);
    masq_close(a);
    masq_close(b);
}

static void test_sessions(void) {
    masq_store *a = open_store("s1");
    uint8_t b_priv[32], b_pub[32], a_pub[32], psk[32];
    masq_crypto_random(b_priv, 32);
    masq_crypto_random(psk, 32);
    CHECK_RC(masq_crypto_x25519_public(b_priv, b_pub), MASQ_OK);

    /* XXpsk3: initiator uses the store's device key, responder an explicit key. */
    masq_session_options io = {sizeof io, "XXpsk3", MASQ_ROLE_INITIATOR, B("prologue"), 8, NULL, NULL, 0, psk, 32};
    masq_session_options ro = {sizeof ro, "XXpsk3", MASQ_ROLE_RESPONDER, B("prologue"), 8, b_priv, NULL, 0, psk, 32};
    masq_session *i = NULL, *r = NULL;
    CHECK_RC(masq_session_new(a, &io, &i), MASQ_OK);
    CHECK_RC(masq_session_new(NULL, &ro, &r), MASQ_OK);
    int state = 0, write_next = 0, can_send = 0;
    CHECK_RC(masq_session_status(i, &state, &write_next, &can_send), MASQ_OK);
    CHECK(state == MASQ_SESSION_HANDSHAKING && write_next == 1 && can_send == 0);
    uint8_t *msg = NULL, *payload = NULL;
    size_t ml = 0, pl = 0;
    masq_session *turn[3][2] = {{i, r}, {r, i}, {i, r}};
    for (int step = 0; step < 3; step++) {
        CHECK_RC(masq_session_write_handshake(turn[step][0], B("hi"), 2, &msg, &ml), MASQ_OK);
        CHECK_RC(masq_session_read_handshake(turn[step][1], msg, ml, &payload, &pl), MASQ_OK);
        CHECK(pl == 2 && memcmp(payload, "hi", 2) == 0);
        masq_free(msg);
        masq_free(payload);
    }
    CHECK_RC(masq_session_status(r, &state, &write_next, &can_send), MASQ_OK);
    CHECK(state == MASQ_SESSION_ESTABLISHED && can_send == 1);
    uint8_t peer[32];
    CHECK_RC(masq_session_peer_key(i, peer), MASQ_OK);
    CHECK(memcmp(peer, b_pub, 32) == 0);
    char *fp = NULL;
    CHECK_RC(masq_session_peer_fingerprint(r, &fp), MASQ_OK);
    char *info = NULL;
    masq_device_info(a, &info);
    CHECK(fp && info && strstr(info, fp) != NULL); /* the same digits `masq devices` shows */
    CHECK_RC(masq_session_peer_key(r, a_pub), MASQ_OK);
    masq_free(fp);
    masq_free(info);

    /* Transport: responder first, then both ways; save/load mid-conversation. */
    CHECK_RC(masq_session_seal(r, B("ad"), 2, B("ping"), 4, &msg, &ml), MASQ_OK);
    CHECK_RC(masq_session_open(i, B("ad"), 2, msg, ml, &payload, &pl), MASQ_OK);
    CHECK(pl == 4 && memcmp(payload, "ping", 4) == 0);
    masq_free(payload);
    CHECK_RC(masq_session_open(i, B("ad"), 2, msg, ml, &payload, &pl), MASQ_E_BAD_SIGNATURE);
    masq_free(msg);
    uint8_t *state_bytes = NULL;
    size_t state_len = 0;
    CHECK_RC(masq_session_save(i, &state_bytes, &state_len), MASQ_OK);
    masq_session *resumed = NULL;
    CHECK_RC(masq_session_load(state_bytes, state_len, &resumed), MASQ_OK);
    masq_session *damaged = (masq_session *)&state_len;
    CHECK_RC(masq_session_load(state_bytes, 10, &damaged), MASQ_E_INVALID);
    CHECK(damaged == NULL);
    masq_free(state_bytes);
    CHECK_RC(masq_session_seal(resumed, NULL, 0, B("pong"), 4, &msg, &ml), MASQ_OK);
    CHECK_RC(masq_session_open(r, NULL, 0, msg, ml, &payload, &pl), MASQ_OK);
    CHECK(pl == 4 && memcmp(payload, "pong", 4) == 0);
    masq_free(payload);
    msg[ml - 1] ^= 1;
    CHECK_RC(masq_session_open(r, NULL, 0, msg, ml, &payload, &pl), MASQ_E_BAD_SIGNATURE);
    masq_free(msg);

    /* Errors: bad pattern, wrong PSK ends the handshake, misuse. */
    masq_session_options bad = io;
    bad.pattern = "XY";
    masq_session *s = NULL;
    CHECK_RC(masq_session_new(a, &bad, &s), MASQ_E_INVALID);
    bad = io;
    bad.psk = NULL;
    bad.psk_len = 0;
    CHECK_RC(masq_session_new(a, &bad, &s), MASQ_E_INVALID);
    bad = io;
    bad.struct_size = 4;
    CHECK_RC(masq_session_new(a, &bad, &s), MASQ_E_INVALID);
    CHECK_RC(masq_session_new(a, NULL, &s), MASQ_E_INVALID);
    uint8_t other_psk[32];
    masq_crypto_random(other_psk, 32);
    masq_session_options wrong = ro;
    wrong.psk = other_psk;
    masq_session *i2 = NULL, *r2 = NULL;
    CHECK_RC(masq_session_new(a, &io, &i2), MASQ_OK);
    CHECK_RC(masq_session_new(NULL, &wrong, &r2), MASQ_OK);
    masq_session *turn2[3][2] = {{i2, r2}, {r2, i2}, {i2, r2}};
    int failed_at = -1;
    for (int step = 0; step < 3 && failed_at < 0; step++) {
        CHECK_RC(masq_session_write_handshake(turn2[step][0], NULL, 0, &msg, &ml), MASQ_OK);
        if (masq_session_read_handshake(turn2[step][1], msg, ml, &payload, &pl) != MASQ_OK) failed_at = step;
        else masq_free(payload);
        masq_free(msg);
    }
    CHECK(failed_at == 2); /* the PSK enters at message 3 */
    CHECK_RC(masq_session_status(r2, &state, NULL, NULL), MASQ_OK);
    CHECK(state == MASQ_SESSION_FAILED);
    CHECK_RC(masq_session_seal(r2, NULL, 0, B("x"), 1, &msg, &ml), MASQ_E_INVALID);
    CHECK_RC(masq_session_seal(NULL, NULL, 0, B("x"), 1, &msg, &ml), MASQ_E_INVALID);
    masq_session_free(i2);
    masq_session_free(r2);
    masq_session_free(i);
    masq_session_free(r);
    masq_session_free(resumed);
    masq_session_free(NULL);
    masq_close(a);
}

/* masq_pair_*: the library carries pairing frames through a relay. The full
 * exchange runs in the Python tests (a real relay); here every bad argument
 * gets its code and message, and NULL tasks are harmless. */
static void test_pairing_tasks_bad_input(void) {
    masq_store *s = open_store("tasks");
    char *link = NULL;
    masq_pairing_task *task = NULL;
    CHECK_RC(masq_pair_offer(NULL, "ws://127.0.0.1:1/", 10, NULL, NULL, &link, &task), MASQ_E_INVALID);
    CHECK_RC(masq_pair_offer(s, "ws://127.0.0.1:1/", 10, NULL, NULL, NULL, &task), MASQ_E_INVALID);
    CHECK_RC(masq_pair_offer(s, "ws://127.0.0.1:1/", 10, NULL, NULL, &link, NULL), MASQ_E_INVALID);
    /* No relay given and none configured. */
    CHECK_RC(masq_pair_offer(s, NULL, 10, NULL, NULL, &link, &task), MASQ_E_CONFIG);
    CHECK(strstr(masq_last_error(), "relay") != NULL);
    CHECK(link == NULL && task == NULL);
    CHECK_RC(masq_pair_join(s, NULL, 10, NULL, NULL, &task), MASQ_E_INVALID);
    CHECK_RC(masq_pair_join(s, "masq://pair/zz#nope", 10, NULL, NULL, &task), MASQ_E_INVALID);
    CHECK_RC(masq_pair_join(s, "https://example.com/#x", 10, NULL, NULL, &task), MASQ_E_INVALID);
    CHECK(task == NULL);
    CHECK_RC(masq_pair_wait(NULL, 0, NULL), MASQ_E_INVALID);
    masq_pair_cancel(NULL);
    masq_pair_free(NULL);
    masq_close(s);
}

int main(void) {
    masq_set_log_callback(MASQ_LOG_ERROR, NULL, NULL);
    test_primitives();
    test_protection();
    test_pairing_and_devices();
    test_renewal_before_sealing();
    test_sessions();
    test_pairing_tasks_bad_input();
    printf("security_test: %d checks, %d failures\n", checks, failures);
    remove_dirs();
    return failures == 0 ? 0 : 1;
}

/*
 * share_test — the "Sharing with other people" part of masq.h, from C: two
 * stores in this process share a namespace through a real Connectoid service
 * on 127.0.0.1 (masq connectoid serve), each with its nickname for the other,
 * the same fingerprint (digits and emoji) on both sides, data both ways, a
 * nickname changed, the share ended on both sides; and every bad input —
 * NULL pointers, bad nicknames and flags, malformed and foreign links, a
 * second accept of the same link, unknown share ids, a locked store — is
 * refused with its status and a message, and stores nothing.
 *
 * usage: share_test SERVICE_URL   (MASQ_PLUGIN_PATH must reach the sqlite and connectoid plugins)
 */
#define _DEFAULT_SOURCE
#include "masq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static const char *service_url;

static masq_store *open_store(const char *label, int with_service) {
    char dir[32];
    snprintf(dir, sizeof dir, "/tmp/masq-sharetest-XXXXXX");
    if (!mkdtemp(dir)) exit(2);
    remember_dir(dir);
    char config[1024];
    if (with_service) {
        snprintf(config, sizeof config,
                 "{\"data_dir\": \"%s\", \"security\": {\"scrypt_log_n\": 10}, \"sharing\": {\"services\": [\"%s\"], "
                 "\"resend_ms\": 1000, \"transport\": {\"plugin\": \"connectoid\", \"options\": {\"interval_ms\": \"100\", "
                 "\"timeout_ms\": \"3000\"}}}}",
                 dir, service_url);
    } else {
        snprintf(config, sizeof config, "{\"data_dir\": \"%s\", \"security\": {\"scrypt_log_n\": 10}}", dir);
    }
    masq_store *s = NULL;
    CHECK_RC(masq_open_config(config, NULL, &s), MASQ_OK);
    if (s) CHECK_RC(masq_set_device_name(s, label), MASQ_OK);
    return s;
}

/* The string value of "key" in a flat JSON object (no escapes in the values
 * this test reads), or "" (and "null" for JSON null). */
static const char *field(const char *json, const char *key, char *out, size_t size) {
    char pattern[64];
    out[0] = '\0';
    snprintf(pattern, sizeof pattern, "\"%s\": ", key);
    const char *at = json ? strstr(json, pattern) : NULL;
    if (!at) return out;
    at += strlen(pattern);
    if (strncmp(at, "null", 4) == 0) {
        snprintf(out, size, "null");
        return out;
    }
    if (*at != '"') return out;
    at++;
    size_t n = 0;
    while (at[n] && at[n] != '"' && n + 1 < size) n++;
    memcpy(out, at, n);
    out[n] = '\0';
    return out;
}

static int count_shares(masq_store *s) {
    char *json = NULL;
    int count = -1;
    if (masq_shares(s, &json) == MASQ_OK) {
        count = 0;
        for (const char *p = json; (p = strstr(p, "\"id\": ")) != NULL; p++) count++;
    }
    masq_free(json);
    return count;
}

/* Wait up to seconds for share `id` of `s` to have `status`. */
static int wait_status(masq_store *s, const char *id, const char *status, int seconds) {
    char value[64];
    for (int i = 0; i < seconds * 10; i++) {
        char *json = NULL;
        int rc = masq_share_info(s, id, &json);
        int done = rc == MASQ_OK && strcmp(field(json, "status", value, sizeof value), status) == 0;
        masq_free(json);
        if (done) return 1;
        usleep(100000);
    }
    return 0;
}

static int wait_value(masq_store *s, const char *ns, const char *key, const char *want, int seconds) {
    for (int i = 0; i < seconds * 10; i++) {
        uint8_t *value = NULL;
        size_t len = 0;
        int found = masq_get(s, ns, B(key), strlen(key), &value, &len) == MASQ_OK;
        int match = found && len == strlen(want) && memcmp(value, want, len) == 0;
        masq_free(value);
        if (match) return 1;
        usleep(100000);
    }
    return 0;
}

static int wait_gone(masq_store *s, const char *id, int seconds) {
    for (int i = 0; i < seconds * 10; i++) {
        char *json = NULL;
        int rc = masq_share_info(s, id, &json);
        masq_free(json);
        if (rc == MASQ_E_NOT_FOUND) return 1;
        usleep(100000);
    }
    return 0;
}

static void test_bad_input(void) {
    masq_store *s = open_store("lonely", 1);
    masq_store *bare = open_store("bare", 0);
    char *link = (char *)1, *json = (char *)1;

    /* masq_share_create: NULLs, bad nicknames, flags and bases; nothing stored. */
    CHECK_RC(masq_share_create(NULL, "notes", "Bob", 0, NULL, &link, &json), MASQ_E_INVALID);
    CHECK(link == NULL && json == NULL);
    CHECK_RC(masq_share_create(s, NULL, "Bob", 0, NULL, &link, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_create(s, "notes", NULL, 0, NULL, &link, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_create(s, "notes", "Bob", 0, NULL, NULL, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_create(s, "notes", "", 0, NULL, &link, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_create(s, "notes", "Bob\nBobson", 0, NULL, &link, NULL), MASQ_E_INVALID);
    CHECK(strstr(masq_last_error(), "control") != NULL);
    CHECK_RC(masq_share_create(s, "notes", "\xff\xfe", 0, NULL, &link, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_create(s, "notes", "Bob \xe2\x80\xae", 0, NULL, &link, NULL), MASQ_E_INVALID);   /* U+202E */
    CHECK(strstr(masq_last_error(), "bidirectional") != NULL);
    char long_name[80];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    CHECK_RC(masq_share_create(s, "notes", long_name, 0, NULL, &link, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_create(s, "notes", "Bob", MASQ_SHARE_MERGE, NULL, &link, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_create(s, "notes", "Bob", 0x80, NULL, &link, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_create(s, "notes", "Bob", 0, "https://app.example/#x", &link, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_create(s, "notes", "Bob", 0, "no scheme", &link, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_create(s, "", "Bob", 0, NULL, &link, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_create(bare, "notes", "Bob", 0, NULL, &link, NULL), MASQ_E_CONFIG);
    CHECK(strstr(masq_last_error(), "service") != NULL);
    CHECK(link == NULL);
    CHECK(count_shares(s) == 0 && count_shares(bare) == 0);

    /* masq_share_accept: NULLs, malformed and foreign links, flags; nothing stored. */
    CHECK_RC(masq_share_accept(NULL, "x", "Alice", NULL, 0, &json), MASQ_E_INVALID);
    CHECK_RC(masq_share_accept(s, NULL, "Alice", NULL, 0, &json), MASQ_E_INVALID);
    CHECK_RC(masq_share_accept(s, "not a link", "Alice", NULL, 0, &json), MASQ_E_INVALID);
    CHECK(strstr(masq_last_error(), "not a share link") != NULL);
    CHECK(json == NULL);
    CHECK_RC(masq_share_accept(s, "masq://pair/0123456789abcdef?via=ws://127.0.0.1:1/#c2VjcmV0c2VjcmV0c2VjcmV0", "Alice", NULL, 0, &json),
             MASQ_E_INVALID);
    CHECK_RC(masq_share_accept(s, "https://evil.example/?connectoid=AAAA.aHR0cDovL3g.#AAAA", "Alice", NULL, 0, &json), MASQ_E_INVALID);

    /* A real link of this store: its own; without its secret; flags. */
    CHECK_RC(masq_share_create(s, "notes", "Bob", 0, NULL, &link, &json), MASQ_OK);
    char id[128], value[128];
    field(json, "id", id, sizeof id);
    CHECK(strlen(id) > 40);
    CHECK(strcmp(field(json, "status", value, sizeof value), "offered") == 0);
    CHECK(strcmp(field(json, "nickname", value, sizeof value), "Bob") == 0);
    CHECK(strcmp(field(json, "fingerprint", value, sizeof value), "null") == 0);
    CHECK(strncmp(link, "masq://share/?connectoid=", 25) == 0 && strchr(link, '#') != NULL);
    masq_free(json);
    CHECK_RC(masq_share_accept(s, link, "Alice", NULL, 0, &json), MASQ_E_INVALID);
    CHECK(strstr(masq_last_error(), "own") != NULL);
    masq_store *other = open_store("other", 1);
    char unsecret[2048];
    snprintf(unsecret, sizeof unsecret, "%s", link);
    *strchr(unsecret, '#') = '\0';
    CHECK_RC(masq_share_accept(other, unsecret, "Alice", NULL, 0, &json), MASQ_E_INVALID);
    CHECK(strstr(masq_last_error(), "secret") != NULL);
    CHECK_RC(masq_share_accept(other, link, "Alice", NULL, MASQ_SHARE_READ_ONLY, &json), MASQ_E_INVALID);
    CHECK_RC(masq_share_accept(other, link, "Alice", NULL, MASQ_SHARE_MERGE, &json), MASQ_E_INVALID);
    CHECK_RC(masq_share_accept(other, link, NULL, NULL, 0, &json), MASQ_E_INVALID);
    CHECK_RC(masq_put(other, "mine", B("k"), 1, B("v"), 1), MASQ_OK);
    CHECK_RC(masq_share_accept(other, link, "Alice", "mine", 0, &json), MASQ_E_INVALID);
    CHECK(strstr(masq_last_error(), "already exists") != NULL);
    CHECK(count_shares(other) == 0);
    /* Accepted once (no json wanted); the second accept of the same link is refused. */
    CHECK_RC(masq_share_accept(other, link, "Alice", NULL, 0, NULL), MASQ_OK);
    CHECK_RC(masq_share_accept(other, link, "Alice", NULL, 0, &json), MASQ_E_DENIED);
    CHECK(strstr(masq_last_error(), "already accepted") != NULL && json == NULL);
    CHECK(count_shares(other) == 1);
    masq_free(link);

    /* Share ids: NULL, empty, unknown. */
    CHECK_RC(masq_share_info(s, NULL, &json), MASQ_E_INVALID);
    CHECK_RC(masq_share_info(s, "", &json), MASQ_E_INVALID);
    CHECK_RC(masq_share_info(s, id, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_info(s, "no-such-share", &json), MASQ_E_NOT_FOUND);
    CHECK(json == NULL);
    CHECK_RC(masq_share_set_nickname(s, "no-such-share", "Carol"), MASQ_E_NOT_FOUND);
    CHECK_RC(masq_share_set_nickname(s, id, ""), MASQ_E_INVALID);
    CHECK_RC(masq_share_set_nickname(s, id, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_unshare(s, "no-such-share"), MASQ_E_NOT_FOUND);
    CHECK_RC(masq_unshare(s, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_unshare(NULL, id), MASQ_E_INVALID);
    CHECK_RC(masq_shares(s, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_shares(NULL, &json), MASQ_E_INVALID);
    CHECK(count_shares(s) == 1);
    /* A prefix is not an id: nothing ended. */
    char prefix[12];
    snprintf(prefix, sizeof prefix, "%.10s", id);
    CHECK_RC(masq_unshare(s, prefix), MASQ_E_NOT_FOUND);
    CHECK(count_shares(s) == 1);

    /* Running. */
    CHECK_RC(masq_share_sync_once(s, 0), MASQ_E_INVALID);
    CHECK_RC(masq_share_sync_once(s, 1e9), MASQ_E_INVALID);
    CHECK_RC(masq_share_sync_stop(s), MASQ_OK);
    CHECK_RC(masq_share_sync_start(NULL), MASQ_E_INVALID);
    CHECK_RC(masq_share_sync_start(s), MASQ_OK);
    CHECK_RC(masq_share_sync_start(s), MASQ_E_BUSY);
    CHECK_RC(masq_share_sync_stop(s), MASQ_OK);

    /* Unshare of a link nobody claimed: gone here. */
    CHECK_RC(masq_unshare(s, id), MASQ_OK);
    CHECK(count_shares(s) == 0);
    CHECK_RC(masq_unshare(s, id), MASQ_E_NOT_FOUND);

    /* A locked store: refused, nothing stored. */
    CHECK_RC(masq_set_passphrase(s, NULL, 0, B("pass"), 4), MASQ_OK);
    CHECK_RC(masq_lock(s), MASQ_OK);
    CHECK_RC(masq_share_create(s, "notes", "Bob", 0, NULL, &link, NULL), MASQ_E_DENIED);
    CHECK_RC(masq_shares(s, &json), MASQ_E_DENIED);
    CHECK_RC(masq_share_sync_start(s), MASQ_E_DENIED);
    CHECK_RC(masq_unlock(s, B("pass"), 4), MASQ_OK);
    CHECK(count_shares(s) == 0);

    CHECK_RC(masq_close(s), MASQ_OK);
    CHECK_RC(masq_close(bare), MASQ_OK);
    CHECK_RC(masq_close(other), MASQ_OK);
}

static void test_share_between_two_stores(void) {
    masq_store *alice = open_store("alice", 1);
    masq_store *bob = open_store("bob", 1);
    char *link = NULL, *json = NULL;
    char id[128], value[256], fingerprint_a[64], fingerprint_b[64], emoji_a[256], emoji_b[256], bob_ns[256];

    CHECK_RC(masq_put(alice, "notes", B("hello"), 5, B("from alice"), 10), MASQ_OK);
    CHECK_RC(masq_put(alice, "private", B("secret"), 6, B("not shared"), 10), MASQ_OK);
    CHECK_RC(masq_share_create(alice, "notes", "Bob", 0, "https://notes.example/open", &link, &json), MASQ_OK);
    CHECK(link && strncmp(link, "https://notes.example/open?connectoid=", 38) == 0);
    field(json, "id", id, sizeof id);
    CHECK(strcmp(field(json, "role", value, sizeof value), "owner") == 0);
    CHECK(strcmp(field(json, "access", value, sizeof value), "read-write") == 0);
    CHECK(strcmp(field(json, "namespace", value, sizeof value), "notes") == 0);
    masq_free(json);
    /* The link makes a QR code. */
    uint8_t *image = NULL;
    size_t image_len = 0;
    CHECK_RC(masq_qr_pgm(link, 4, &image, &image_len), MASQ_OK);
    CHECK(image_len > 100 && memcmp(image, "P5", 2) == 0);
    masq_free(image);

    /* A nickname may hold emoji, joined ones included (U+200D is no bidi override). */
    const char *alice_name = "Alice \xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb";
    CHECK_RC(masq_share_accept(bob, link, alice_name, NULL, 0, &json), MASQ_OK);
    CHECK(strcmp(field(json, "id", value, sizeof value), id) == 0);
    CHECK(strcmp(field(json, "status", value, sizeof value), "claimed") == 0);
    CHECK(strcmp(field(json, "role", value, sizeof value), "guest") == 0);
    CHECK(strcmp(field(json, "namespace", value, sizeof value), "null") == 0);
    CHECK(strcmp(field(json, "nickname", value, sizeof value), alice_name) == 0);
    masq_free(json);

    /* Bob runs in the background; Alice catches up once (claim, welcome, records, acks). */
    CHECK_RC(masq_share_sync_start(bob), MASQ_OK);
    CHECK_RC(masq_share_sync_once(alice, 30), MASQ_OK);
    CHECK(wait_status(alice, id, "active", 10));
    CHECK(wait_status(bob, id, "active", 20));
    CHECK_RC(masq_share_info(alice, id, &json), MASQ_OK);
    field(json, "fingerprint", fingerprint_a, sizeof fingerprint_a);
    field(json, "fingerprint_emoji", emoji_a, sizeof emoji_a);
    CHECK(strcmp(field(json, "nickname", value, sizeof value), "Bob") == 0);
    masq_free(json);
    CHECK_RC(masq_share_info(bob, id, &json), MASQ_OK);
    field(json, "fingerprint", fingerprint_b, sizeof fingerprint_b);
    field(json, "fingerprint_emoji", emoji_b, sizeof emoji_b);
    field(json, "namespace", bob_ns, sizeof bob_ns);
    masq_free(json);
    CHECK(strlen(fingerprint_a) == 35 && strcmp(fingerprint_a, fingerprint_b) == 0);
    CHECK(strlen(emoji_a) > 0 && strcmp(emoji_a, "null") != 0 && strcmp(emoji_a, emoji_b) == 0);
    CHECK(strncmp(bob_ns, "shared:notes:", 13) == 0);

    /* Data both ways; the private namespace stays private. */
    CHECK(wait_value(bob, bob_ns, "hello", "from alice", 20));
    CHECK_RC(masq_put(bob, bob_ns, B("from-bob"), 8, B("hi alice"), 8), MASQ_OK);
    CHECK_RC(masq_share_sync_start(alice), MASQ_OK);
    CHECK(wait_value(alice, "notes", "from-bob", "hi alice", 20));
    uint8_t *v = NULL;
    size_t vlen = 0;
    CHECK_RC(masq_get(bob, "private", B("secret"), 6, &v, &vlen), MASQ_E_NOT_FOUND);

    /* The list, and a new nickname. */
    CHECK_RC(masq_shares(bob, &json), MASQ_OK);
    CHECK(json && json[0] == '[' && strstr(json, id) != NULL);
    masq_free(json);
    CHECK_RC(masq_share_set_nickname(bob, id, "Alice (work)"), MASQ_OK);
    CHECK_RC(masq_share_info(bob, id, &json), MASQ_OK);
    CHECK(strcmp(field(json, "nickname", value, sizeof value), "Alice (work)") == 0);
    CHECK(strcmp(field(json, "status", value, sizeof value), "active") == 0);
    masq_free(json);

    /* Bob ends it: gone on both sides; both keep the data; later changes stay home. */
    CHECK_RC(masq_unshare(bob, id), MASQ_OK);
    CHECK_RC(masq_unshare(bob, id), MASQ_E_NOT_FOUND);
    CHECK(wait_gone(alice, id, 20));
    CHECK_RC(masq_put(alice, "notes", B("after"), 5, B("x"), 1), MASQ_OK);
    usleep(1000000);
    CHECK_RC(masq_get(bob, bob_ns, B("after"), 5, &v, &vlen), MASQ_E_NOT_FOUND);
    CHECK(wait_value(bob, bob_ns, "hello", "from alice", 1));
    CHECK(wait_value(alice, "notes", "from-bob", "hi alice", 1));

    masq_free(link);
    /* Closing with sharing running stops it. */
    CHECK_RC(masq_close(alice), MASQ_OK);
    CHECK_RC(masq_close(bob), MASQ_OK);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: share_test SERVICE_URL\n");
        return 2;
    }
    service_url = argv[1];
    masq_set_log_callback(MASQ_LOG_ERROR, NULL, NULL);
    test_bad_input();
    test_share_between_two_stores();
    printf("share_test: %d checks, %d failures\n", checks, failures);
    remove_dirs();
    return failures == 0 ? 0 : 1;
}

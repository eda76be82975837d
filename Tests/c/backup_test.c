/*
 * backup_test — the "Backup and restore" part of masq.h, from C: backups
 * under a passphrase and under a recovery key, verify, restore (into an
 * empty directory only; the restored device takes a new replica id and
 * seals nothing before renewing its session), export, a protected store
 * backed up while locked, and every bad input with its status and message,
 * leaving nothing behind.
 *
 * usage: backup_test     (MASQ_PLUGIN_PATH must reach the sqlite and memory plugins)
 */
#define _DEFAULT_SOURCE
#include "masq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static char root[64];

static void path_in(char *out, size_t size, const char *name) { snprintf(out, size, "%s/%s", root, name); }

static masq_store *open_dir(const char *dir) {
    char config[512];
    snprintf(config, sizeof config, "{\"data_dir\": \"%s\", \"security\": {\"scrypt_log_n\": 10}}", dir);
    masq_store *s = NULL;
    CHECK_RC(masq_open_config(config, NULL, &s), MASQ_OK);
    return s;
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int leftovers(void) { /* temporary directories of a failed restore */
    char command[256];
    snprintf(command, sizeof command, "ls -A '%s' | grep -q restoring", root);
    return system(command) == 0;
}

static int pair(masq_store *offerer, masq_store *joiner) {
    char *link = NULL;
    masq_pairing *o = NULL, *j = NULL;
    if (masq_pairing_offer(offerer, "tcp:127.0.0.1:1", 60, &link, &o) != MASQ_OK) return -1;
    int rc = masq_pairing_join(joiner, link, &j);
    masq_free(link);
    if (rc != MASQ_OK) return -1;
    uint8_t *frame = NULL, *reply = NULL;
    size_t len = 0, reply_len = 0;
    int paired_o = 0, paired_j = 0, result = -1;
    CHECK_RC(masq_pairing_start(j, &frame, &len), MASQ_OK);
    for (int i = 0; i < 10; i++) {
        rc = masq_pairing_receive(o, frame, len, &reply, &reply_len, &paired_o);
        masq_free(frame);
        frame = NULL;
        if (rc != MASQ_OK) break;
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

static int value_is(masq_store *s, const char *ns, const char *key, const char *expected) {
    uint8_t *v = NULL;
    size_t n = 0;
    int rc = masq_get(s, ns, B(key), strlen(key), &v, &n);
    int same = rc == MASQ_OK && n == strlen(expected) && memcmp(v, expected, n) == 0;
    masq_free(v);
    return same;
}

static void restore_into(const char *dir, const char *backup, const char *secret, int expected, const char *message) {
    char config[512];
    snprintf(config, sizeof config, "{\"data_dir\": \"%s\", \"security\": {\"scrypt_log_n\": 10}}", dir);
    int existed = exists(dir);
    CHECK_RC(masq_restore_config(config, NULL, backup, B(secret), strlen(secret)), expected);
    if (expected != MASQ_OK) {
        if (message && !strstr(masq_last_error(), message)) {
            fprintf(stderr, "restore of %s: message \"%s\" lacks \"%s\"\n", backup, masq_last_error(), message);
            CHECK(0);
        }
        CHECK(exists(dir) == existed);
        CHECK(!leftovers());
    }
}

/* Copy src to dst, applying edit(data, size) on the way. */
static size_t rewrite(const char *src, const char *dst, size_t (*edit)(uint8_t *, size_t)) {
    FILE *f = fopen(src, "rb");
    if (!f) return 0;
    static uint8_t data[4 << 20];
    size_t n = fread(data, 1, sizeof data, f);
    fclose(f);
    n = edit(data, n);
    f = fopen(dst, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
    return n;
}
static size_t cut_tail(uint8_t *d, size_t n) { (void)d; return n - 5; }
static size_t flip_chunk(uint8_t *d, size_t n) { d[150] ^= 0x20; return n; }
static size_t flip_header(uint8_t *d, size_t n) { d[26] ^= 1; return n; }
static size_t new_version(uint8_t *d, size_t n) { d[8] = 9; return n; }
static size_t garbage(uint8_t *d, size_t n) { memset(d, 'x', n); return n; }

static void test_backup_restore_and_sessions(void) {
    char a_dir[128], b_dir[128], r_dir[128], bak[128], rk_bak[128], other[128];
    path_in(a_dir, sizeof a_dir, "a");
    path_in(b_dir, sizeof b_dir, "b");
    path_in(r_dir, sizeof r_dir, "restored");
    path_in(bak, sizeof bak, "a.bak");
    path_in(rk_bak, sizeof rk_bak, "a-rk.bak");
    path_in(other, sizeof other, "other");
    masq_store *a = open_dir(a_dir), *b = open_dir(b_dir);
    CHECK_RC(masq_set_device_name(a, "alpha"), MASQ_OK);
    char a_id[21], b_id[21];
    device_id(a, a_id);
    device_id(b, b_id);
    CHECK(pair(a, b) == 0);
    CHECK_RC(masq_put(a, "notes", B("k"), 1, B("1"), 1), MASQ_OK);
    CHECK_RC(masq_put(a, "notes", B("j"), 1, B("gone"), 4), MASQ_OK);
    int64_t total = 0;
    CHECK_RC(masq_counter_add(a, "app", B("c"), 1, 5), MASQ_OK);
    /* Before the backup, A seals for B with its fresh session (pairing made it). */
    uint8_t *m = NULL, *p = NULL;
    size_t ml = 0, pl = 0;
    CHECK_RC(masq_seal_for_device(a, b_id, NULL, 0, B("before"), 6, &m, &ml), MASQ_OK);
    CHECK_RC(masq_open_from_device(b, a_id, NULL, 0, m, ml, &p, &pl), MASQ_OK);
    masq_free(m); masq_free(p);
    uint64_t a_replica = 0;
    CHECK_RC(masq_replica_id(a, &a_replica), MASQ_OK);

    /* Backups: arguments, an existing file, both key kinds. */
    CHECK_RC(masq_backup(a, NULL, B("pw"), 2), MASQ_E_INVALID);
    CHECK_RC(masq_backup(a, bak, NULL, 0), MASQ_E_INVALID);
    CHECK_RC(masq_backup(NULL, bak, B("pw"), 2), MASQ_E_INVALID);
    CHECK_RC(masq_backup(a, bak, B("backup pw"), 9), MASQ_OK);
    CHECK_RC(masq_backup(a, bak, B("backup pw"), 9), MASQ_E_INVALID);
    CHECK(strstr(masq_last_error(), "exists") != NULL);
    char *key = NULL, *json = NULL;
    CHECK_RC(masq_backup_with_recovery_key(a, rk_bak, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_backup_with_recovery_key(a, rk_bak, &key), MASQ_OK);
    CHECK(key && strlen(key) == 69 && key[4] == '-');
    CHECK_RC(masq_backup_info(bak, &json), MASQ_OK);
    CHECK(json && strstr(json, "\"key\": \"passphrase\"") && strstr(json, "\"format\": 1"));
    masq_free(json);
    CHECK_RC(masq_backup_info(rk_bak, &json), MASQ_OK);
    CHECK(json && strstr(json, "\"key\": \"recovery_key\""));
    masq_free(json);
    json = NULL;
    CHECK_RC(masq_backup_verify(bak, B("backup pw"), 9, &json), MASQ_OK);
    CHECK(json && strstr(json, "\"device_id\": \"") && strstr(json, a_id) && strstr(json, "\"device_name\": \"alpha\""));
    masq_free(json);
    CHECK_RC(masq_backup_verify(bak, B("wrong"), 5, NULL), MASQ_E_DENIED);
    CHECK(strstr(masq_last_error(), "wrong passphrase") != NULL);
    CHECK_RC(masq_backup_verify(rk_bak, B(key), strlen(key), NULL), MASQ_OK);
    char typo[80];
    strcpy(typo, key);
    typo[0] = typo[0] == 'A' ? 'B' : 'A';
    CHECK_RC(masq_backup_verify(rk_bak, B(typo), strlen(typo), NULL), MASQ_E_INVALID);
    CHECK(strstr(masq_last_error(), "typo") != NULL);
    CHECK_RC(masq_backup_verify(rk_bak, B("not a key"), 9, NULL), MASQ_E_INVALID);

    /* A keeps writing after the backup. */
    CHECK_RC(masq_put(a, "notes", B("k"), 1, B("2"), 1), MASQ_OK);
    CHECK_RC(masq_delete(a, "notes", B("j"), 1), MASQ_OK);

    /* Bad files: each its status and message, nothing left behind. */
    char bad[128];
    path_in(bad, sizeof bad, "bad.bak");
    rewrite(bak, bad, cut_tail);
    restore_into(r_dir, bad, "backup pw", MASQ_E_CORRUPT, "truncated");
    rewrite(bak, bad, flip_chunk);
    restore_into(r_dir, bad, "backup pw", MASQ_E_BAD_SIGNATURE, "does not authenticate");
    rewrite(bak, bad, flip_header);
    restore_into(r_dir, bad, "backup pw", MASQ_E_CORRUPT, "header is damaged");
    rewrite(bak, bad, new_version);
    restore_into(r_dir, bad, "backup pw", MASQ_E_UNSUPPORTED, "format version 9");
    CHECK_RC(masq_backup_info(bad, &json), MASQ_E_UNSUPPORTED);
    rewrite(bak, bad, garbage);
    restore_into(r_dir, bad, "backup pw", MASQ_E_CORRUPT, "not a Masq backup");
    restore_into(r_dir, "/nonexistent/x.bak", "backup pw", MASQ_E_NOT_FOUND, "cannot read");
    restore_into(r_dir, bak, "wrong", MASQ_E_DENIED, "wrong passphrase");
    restore_into(r_dir, rk_bak, "backup pw", MASQ_E_INVALID, "not a recovery key");
    restore_into(r_dir, bak, "", MASQ_E_INVALID, "empty");
    /* Another backup's recovery key: the right shape, the wrong key. */
    char other_bak[128], *other_key = NULL;
    path_in(other_bak, sizeof other_bak, "b-rk.bak");
    CHECK_RC(masq_backup_with_recovery_key(b, other_bak, &other_key), MASQ_OK);
    restore_into(r_dir, rk_bak, other_key, MASQ_E_DENIED, "another recovery key");
    masq_free(other_key);
    /* Memory keeps nothing: refused. A non-empty target: refused, untouched. */
    char config[512];
    snprintf(config, sizeof config, "{\"data_dir\": \"%s\", \"storage\": {\"plugin\": \"memory\"}}", r_dir);
    CHECK_RC(masq_restore_config(config, NULL, bak, B("backup pw"), 9), MASQ_E_UNSUPPORTED);
    CHECK(!exists(r_dir) && !leftovers());
    CHECK_RC(masq_restore_config(NULL, NULL, bak, B("backup pw"), 9), MASQ_E_INVALID);
    restore_into(a_dir, bak, "backup pw", MASQ_E_INVALID, "not empty");
    CHECK(exists(a_dir));
    CHECK(value_is(a, "notes", "k", "2"));

    /* The restore: the backed-up state, a new replica id, the same device. */
    restore_into(r_dir, bak, "backup pw", MASQ_OK, NULL);
    masq_store *r = open_dir(r_dir);
    CHECK(value_is(r, "notes", "k", "1"));
    CHECK(value_is(r, "notes", "j", "gone"));
    CHECK_RC(masq_counter_get(r, "app", B("c"), 1, &total), MASQ_OK);
    CHECK(total == 5);
    uint64_t r_replica = 0;
    CHECK_RC(masq_replica_id(r, &r_replica), MASQ_OK);
    CHECK(r_replica != 0 && r_replica != a_replica);
    char r_id[21];
    device_id(r, r_id);
    CHECK(strcmp(r_id, a_id) == 0);
    CHECK_RC(masq_close(r), MASQ_OK);
    r = open_dir(r_dir);   /* the new id sticks */
    uint64_t again = 0;
    CHECK_RC(masq_replica_id(r, &again), MASQ_OK);
    CHECK(again == r_replica);

    /* Sessions: the restored store seals nothing before renewal (its stored
     * session may be older than the last message A sealed), then works. */
    CHECK_RC(masq_seal_for_device(r, b_id, NULL, 0, B("x"), 1, &m, &ml), MASQ_E_DENIED);
    CHECK(strstr(masq_last_error(), "renew") != NULL);
    uint8_t *first = NULL, *answer = NULL;
    size_t first_len = 0, answer_len = 0;
    CHECK_RC(masq_device_renew_begin(r, b_id, &first, &first_len), MASQ_OK);
    CHECK_RC(masq_device_renew_answer(b, a_id, first, first_len, &answer, &answer_len), MASQ_OK);
    CHECK_RC(masq_device_renew_complete(r, b_id, answer, answer_len), MASQ_OK);
    masq_free(first); masq_free(answer);
    CHECK_RC(masq_seal_for_device(b, a_id, NULL, 0, B("hi"), 2, &m, &ml), MASQ_OK);   /* the answering side speaks first */
    CHECK_RC(masq_open_from_device(r, b_id, NULL, 0, m, ml, &p, &pl), MASQ_OK);
    masq_free(m); masq_free(p);
    CHECK_RC(masq_seal_for_device(r, b_id, NULL, 0, B("after"), 5, &m, &ml), MASQ_OK);
    CHECK_RC(masq_open_from_device(b, a_id, NULL, 0, m, ml, &p, &pl), MASQ_OK);
    CHECK(pl == 5 && memcmp(p, "after", 5) == 0);
    masq_free(m); masq_free(p);

    /* The recovery-key backup, typed in lower case with spaces. */
    for (char *c = key; *c; c++) *c = *c == '-' ? ' ' : (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    restore_into(other, rk_bak, key, MASQ_OK, NULL);
    masq_store *o = open_dir(other);
    CHECK(value_is(o, "notes", "j", "gone"));
    CHECK_RC(masq_close(o), MASQ_OK);
    masq_free(key);

    /* Export: header, one line per live key, trailer. */
    char out[128];
    path_in(out, sizeof out, "a.jsonl");
    CHECK_RC(masq_export(a, out), MASQ_OK);
    CHECK_RC(masq_export(a, out), MASQ_E_INVALID);
    CHECK_RC(masq_export(a, NULL), MASQ_E_INVALID);
    FILE *f = fopen(out, "r");
    char line[4096];
    int lines = 0, k_two = 0, j_seen = 0, end = 0;
    while (f && fgets(line, sizeof line, f)) {
        lines++;
        if (strstr(line, "\"key_b64\":\"aw==\",\"value_b64\":\"Mg==\"")) k_two = 1;   /* k = "2" */
        if (strstr(line, "\"key_b64\":\"ag==\"")) j_seen = 1;                        /* j (deleted) */
        if (strstr(line, "{\"masq_export_end\":true,\"records\":2}")) end = 1;
    }
    if (f) fclose(f);
    CHECK(lines == 4 && k_two && !j_seen && end);
    CHECK_RC(masq_close(r), MASQ_OK);
    CHECK_RC(masq_close(a), MASQ_OK);
    CHECK_RC(masq_close(b), MASQ_OK);
}

/* A store with a passphrase is backed up while locked; the restored store
 * opens locked, with the same passphrase, and takes its new id on unlock. */
static void test_protected_store(void) {
    char p_dir[128], r_dir[128], bak[128], out[128];
    path_in(p_dir, sizeof p_dir, "protected");
    path_in(r_dir, sizeof r_dir, "protected-restored");
    path_in(bak, sizeof bak, "protected.bak");
    path_in(out, sizeof out, "protected.jsonl");
    masq_store *s = open_dir(p_dir);
    CHECK_RC(masq_put(s, "secrets", B("k"), 1, B("v"), 1), MASQ_OK);
    CHECK_RC(masq_set_passphrase(s, NULL, 0, B("store pw"), 8), MASQ_OK);
    uint64_t original = 0;
    CHECK_RC(masq_replica_id(s, &original), MASQ_OK);
    CHECK_RC(masq_lock(s), MASQ_OK);
    CHECK_RC(masq_export(s, out), MASQ_E_DENIED);
    CHECK_RC(masq_backup(s, bak, B("backup pw"), 9), MASQ_OK);
    CHECK_RC(masq_close(s), MASQ_OK);
    restore_into(r_dir, bak, "store pw", MASQ_E_DENIED, "wrong passphrase");
    restore_into(r_dir, bak, "backup pw", MASQ_OK, NULL);
    masq_store *r = open_dir(r_dir);
    int prot = 0, locked = 0;
    CHECK_RC(masq_protection(r, &prot, &locked), MASQ_OK);
    CHECK(prot == 1 && locked == 1);
    uint8_t *v = NULL;
    size_t n = 0;
    CHECK_RC(masq_get(r, "secrets", B("k"), 1, &v, &n), MASQ_E_DENIED);
    CHECK_RC(masq_unlock(r, B("backup pw"), 9), MASQ_E_DENIED);
    CHECK_RC(masq_unlock(r, B("store pw"), 8), MASQ_OK);
    CHECK(value_is(r, "secrets", "k", "v"));
    uint64_t restored = 0;
    CHECK_RC(masq_replica_id(r, &restored), MASQ_OK);
    CHECK(restored != 0 && restored != original);
    CHECK_RC(masq_close(r), MASQ_OK);
}

int main(void) {
    strcpy(root, "/tmp/masq-bktest-XXXXXX");
    if (!mkdtemp(root)) return 2;
    test_backup_restore_and_sessions();
    test_protected_store();
    char command[128];
    snprintf(command, sizeof command, "rm -rf '%s'", root);
    if (failures == 0 && system(command) != 0) return 2;
    printf("backup_test: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}

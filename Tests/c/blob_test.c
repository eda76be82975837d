/*
 * blob_test — the "Blobs" part of masq.h, from C: a file written as a blob
 * and read back whole, in ranges, to a file and to a stream; the same bytes
 * stored once; the reference readable without a store; collection; a
 * protected store; and every bad input — NULL pointers, a key holding an
 * ordinary value, an absent key, a file that cannot be read or written, a
 * read callback that fails part way, a write callback that stops, an offset
 * past the end — refused with its status and a message, the key unchanged.
 *
 * usage: blob_test   (MASQ_PLUGIN_PATH must reach the sqlite plugin)
 */
#define _DEFAULT_SOURCE
#include "masq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define MiB (1u << 20)

static char dir[64];

static masq_store *open_store(const char *sub) {
    char config[512];
    snprintf(config, sizeof config, "{\"data_dir\": \"%s/%s\", \"security\": {\"scrypt_log_n\": 10}}", dir, sub);
    masq_store *s = NULL;
    CHECK_RC(masq_open_config(config, NULL, &s), MASQ_OK);
    return s;
}

/* A number after "key": in a flat JSON object, or -1. */
static long long number(const char *json, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\": ", key);
    const char *at = json ? strstr(json, pattern) : NULL;
    return at ? atoll(at + strlen(pattern)) : -1;
}

static int has(const char *json, const char *text) { return json && strstr(json, text) != NULL; }

/* Deterministic bytes. */
static unsigned char *pattern_bytes(size_t n, unsigned seed) {
    unsigned char *p = malloc(n);
    unsigned x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (unsigned char)(x >> 16);
    }
    return p;
}

struct source {
    const unsigned char *data;
    size_t size, at, fail_after;
};

static int64_t read_source(void *ctx, uint8_t *buf, size_t len) {
    struct source *s = ctx;
    if (s->at >= s->fail_after) return -1;
    size_t n = s->size - s->at < len ? s->size - s->at : len;
    if (n > 100000) n = 100000;  /* short reads are fine */
    memcpy(buf, s->data + s->at, n);
    s->at += n;
    return (int64_t)n;
}

struct sink {
    unsigned char *data;
    size_t size, calls, stop_after;
};

static int write_sink(void *ctx, const uint8_t *data, size_t len) {
    struct sink *s = ctx;
    if (s->calls++ >= s->stop_after) return 1;
    memcpy(s->data + s->size, data, len);
    s->size += len;
    return 0;
}

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n + 1);
    *size = fread(p, 1, (size_t)n, f);
    fclose(f);
    return p;
}

static void test_files_streams_and_ranges(void) {
    masq_store *s = open_store("plain");
    const size_t size = 2 * MiB + 777;
    unsigned char *data = pattern_bytes(size, 1);
    char path[128], out[128];
    snprintf(path, sizeof path, "%s/input.bin", dir);
    snprintf(out, sizeof out, "%s/output.bin", dir);
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, size, f);
    fclose(f);

    char *info = NULL;
    CHECK_RC(masq_blob_put_file(s, "files", B("k"), 1, path, "application/octet-stream", &info), MASQ_OK);
    CHECK(number(info, "size") == (long long)size && number(info, "chunks") == 3 && number(info, "new_chunks") == 3);
    CHECK(has(info, "\"name\": \"input.bin\"") && has(info, "\"complete\": true"));
    masq_free(info);

    /* The key holds a reference: masq_get returns it, masq_blob_parse reads it. */
    uint8_t *ref = NULL;
    size_t ref_len = 0;
    CHECK_RC(masq_get(s, "files", B("k"), 1, &ref, &ref_len), MASQ_OK);
    char *parsed = NULL;
    CHECK_RC(masq_blob_parse(ref, ref_len, &parsed), MASQ_OK);
    CHECK(number(parsed, "size") == (long long)size && has(parsed, "\"content_type\": \"application/octet-stream\""));
    masq_free(parsed);
    masq_free(ref);
    CHECK_RC(masq_blob_parse(B("{}"), 2, &parsed), MASQ_E_INVALID);
    CHECK(parsed == NULL);

    /* Whole, to a file. */
    CHECK_RC(masq_blob_get_file(s, "files", B("k"), 1, out, 0, MASQ_BLOB_TO_END), MASQ_OK);
    size_t got_size = 0;
    unsigned char *got = read_file(out, &got_size);
    CHECK(got && got_size == size && memcmp(got, data, size) == 0);
    free(got);

    /* A range across a chunk boundary, to a stream. */
    struct sink sk = {malloc(size), 0, 0, 1000};
    CHECK_RC(masq_blob_get_stream(s, "files", B("k"), 1, MiB - 10, 30, write_sink, &sk), MASQ_OK);
    CHECK(sk.size == 30 && memcmp(sk.data, data + MiB - 10, 30) == 0 && sk.calls == 2);
    /* A write callback that stops: MASQ_E_IO. */
    sk.size = 0;
    sk.calls = 0;
    sk.stop_after = 1;
    CHECK_RC(masq_blob_get_stream(s, "files", B("k"), 1, 0, MASQ_BLOB_TO_END, write_sink, &sk), MASQ_E_IO);
    CHECK(sk.size == MiB);
    CHECK_RC(masq_blob_get_stream(s, "files", B("k"), 1, size + 1, 1, write_sink, &sk), MASQ_E_INVALID);
    free(sk.data);

    /* From a stream: the same bytes add no chunk. */
    struct source src = {data, size, 0, (size_t)-1};
    CHECK_RC(masq_blob_put_stream(s, "files", B("copy"), 4, read_source, &src, NULL, "copy.bin", &info), MASQ_OK);
    CHECK(number(info, "new_chunks") == 0 && number(info, "new_bytes") == 0);
    masq_free(info);

    /* A read callback that fails part way: the key keeps its old value. */
    CHECK_RC(masq_put(s, "files", B("old"), 3, B("value"), 5), MASQ_OK);
    unsigned char *other = pattern_bytes(size, 2);
    struct source failing = {other, size, 0, MiB + 5};
    info = (char *)1;
    CHECK_RC(masq_blob_put_stream(s, "files", B("old"), 3, read_source, &failing, NULL, NULL, &info), MASQ_E_IO);
    CHECK(info == NULL && has(masq_last_error(), "callback"));
    uint8_t *value = NULL;
    size_t value_len = 0;
    CHECK_RC(masq_get(s, "files", B("old"), 3, &value, &value_len), MASQ_OK);
    CHECK(value_len == 5 && memcmp(value, "value", 5) == 0);
    masq_free(value);
    free(other);

    /* Errors: a missing file, an unwritable destination, not a blob, absent, NULLs. */
    char missing[128];
    snprintf(missing, sizeof missing, "%s/missing.bin", dir);
    CHECK_RC(masq_blob_put_file(s, "files", B("x"), 1, missing, NULL, NULL), MASQ_E_IO);
    CHECK(has(masq_last_error(), "missing.bin"));
    CHECK_RC(masq_blob_get_file(s, "files", B("k"), 1, "/nonexistent-dir/out.bin", 0, MASQ_BLOB_TO_END), MASQ_E_IO);
    CHECK_RC(masq_blob_get_file(s, "files", B("old"), 3, out, 0, MASQ_BLOB_TO_END), MASQ_E_INVALID);
    CHECK_RC(masq_blob_info(s, "files", B("absent"), 6, &info), MASQ_E_NOT_FOUND);
    CHECK_RC(masq_blob_put_file(s, "files", B("k"), 1, NULL, NULL, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_blob_put_stream(s, "files", B("k"), 1, NULL, NULL, NULL, NULL, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_blob_get_stream(s, "files", B("k"), 1, 0, 1, NULL, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_blob_info(s, "files", B("k"), 1, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_blob_info(NULL, "files", B("k"), 1, &info), MASQ_E_INVALID);
    CHECK_RC(masq_blob_put_file(s, "files", B("k"), 0, path, NULL, NULL), MASQ_E_INVALID);
    char long_type[300];
    memset(long_type, 'a', sizeof long_type - 1);
    long_type[sizeof long_type - 1] = '\0';
    CHECK_RC(masq_blob_put_file(s, "files", B("k"), 1, path, long_type, NULL), MASQ_E_INVALID);

    /* Fetching a complete blob is fine; info says complete. */
    CHECK_RC(masq_blob_fetch(s, "files", B("k"), 1), MASQ_OK);
    CHECK_RC(masq_blob_info(s, "files", B("k"), 1, &info), MASQ_OK);
    CHECK(has(info, "\"complete\": true") && number(info, "missing_chunks") == 0);
    masq_free(info);

    /* Collection: nothing while referenced; everything once the keys go. */
    char *report = NULL;
    CHECK_RC(masq_blob_gc(s, &report), MASQ_OK);
    CHECK(number(report, "chunks_kept") == 3);
    masq_free(report);
    CHECK_RC(masq_delete(s, "files", B("k"), 1), MASQ_OK);
    CHECK_RC(masq_delete(s, "files", B("copy"), 4), MASQ_OK);
    CHECK_RC(masq_blob_gc(s, &report), MASQ_OK);
    CHECK(number(report, "chunks_kept") == 0 && number(report, "chunks_deleted") >= 3);
    masq_free(report);
    CHECK_RC(masq_blob_gc(s, NULL), MASQ_OK);
    CHECK_RC(masq_blob_set_progress(s, NULL, NULL), MASQ_OK);

    /* The sync status carries the blob section. */
    char *status = NULL;
    CHECK_RC(masq_sync_status(s, &status), MASQ_OK);
    CHECK(has(status, "\"blobs\": {\"mode\": \"eager\", \"fetching\": []"));
    masq_free(status);
    CHECK_RC(masq_close(s), MASQ_OK);
    free(data);
}

static void test_protected_store(void) {
    masq_store *s = open_store("sealed");
    CHECK_RC(masq_set_passphrase(s, NULL, 0, B("pw"), 2), MASQ_OK);
    const size_t size = MiB + 1;
    unsigned char *data = malloc(size);
    for (size_t i = 0; i < size; i++) data[i] = "SECRET-CHUNK-TEXT-"[i % 18];
    struct source src = {data, size, 0, (size_t)-1};
    CHECK_RC(masq_blob_put_stream(s, "docs", B("d"), 1, read_source, &src, "text/plain", "d.txt", NULL), MASQ_OK);
    CHECK_RC(masq_close(s), MASQ_OK);
    char db[128];
    snprintf(db, sizeof db, "%s/sealed/masq.db", dir);
    size_t n = 0;
    unsigned char *raw = read_file(db, &n);
    CHECK(raw != NULL);
    int found = 0;
    for (size_t i = 0; raw && i + 18 <= n; i++) {
        if (memcmp(raw + i, "SECRET-CHUNK-TEXT-", 18) == 0) { found = 1; break; }
    }
    CHECK(!found);
    free(raw);
    s = open_store("sealed");
    char *info = NULL;
    CHECK_RC(masq_blob_info(s, "docs", B("d"), 1, &info), MASQ_E_DENIED);
    CHECK_RC(masq_unlock(s, B("pw"), 2), MASQ_OK);
    struct sink sk = {malloc(size), 0, 0, 1000};
    CHECK_RC(masq_blob_get_stream(s, "docs", B("d"), 1, 0, MASQ_BLOB_TO_END, write_sink, &sk), MASQ_OK);
    CHECK(sk.size == size && memcmp(sk.data, data, size) == 0);
    free(sk.data);
    CHECK_RC(masq_close(s), MASQ_OK);
    free(data);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/masq-blobtest-XXXXXX");
    if (!mkdtemp(dir)) return 2;
    test_files_streams_and_ranges();
    test_protected_store();
    char cleanup[128];
    snprintf(cleanup, sizeof cleanup, "rm -rf '%s'", dir);
    if (system(cleanup) != 0) fprintf(stderr, "could not remove %s\n", dir);
    printf("blob_test: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}

/*
 * bench/storage — batched puts/s and point gets/s through masq.h with the
 * SQLite plugin, side by side with a raw SQLite program using the same
 * pragmas (WAL, same synchronous and cache size), the same table schema and
 * the same statements, in the same run. Prints both figures and the ratio.
 *
 * usage: storage_bench [keys=200000] [batch=1000] [value_bytes=100] [rounds=3]
 *        (run it through bench/storage/run.sh, which builds everything in release mode)
 */
#define _POSIX_C_SOURCE 200809L
#include "masq.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *detail) {
    fprintf(stderr, "storage_bench: %s: %s\n", what, detail);
    exit(1);
}

typedef struct {
    size_t keys, batch, value_bytes;
    char **key_text;   /* "key%010zu" */
    size_t *order;     /* random permutation for reads */
    uint8_t *value;
} workload;

static workload make_workload(size_t keys, size_t batch, size_t value_bytes) {
    workload w = {keys, batch, value_bytes, NULL, NULL, NULL};
    w.key_text = malloc(keys * sizeof(char *));
    w.order = malloc(keys * sizeof(size_t));
    w.value = malloc(value_bytes);
    for (size_t i = 0; i < value_bytes; i++) w.value[i] = (uint8_t)('a' + i % 26);
    srand(42);
    for (size_t i = 0; i < keys; i++) {
        w.key_text[i] = malloc(24);
        /* insert in a shuffled order too: keys arrive unsorted in real use */
        snprintf(w.key_text[i], 24, "key%010u", (unsigned)(((uint64_t)i * 2654435761u) % 4294967291u));
        w.order[i] = i;
    }
    for (size_t i = keys - 1; i > 0; i--) {
        size_t j = (size_t)rand() % (i + 1);
        size_t t = w.order[i]; w.order[i] = w.order[j]; w.order[j] = t;
    }
    return w;
}

/* ---- raw SQLite ------------------------------------------------------------ */

static void raw_exec(sqlite3 *db, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) die(sql, err ? err : "?");
}

static void raw_run(const workload *w, const char *dir, const char *synchronous, double *puts_per_s, double *gets_per_s) {
    char path[512];
    snprintf(path, sizeof path, "%s/raw.db", dir);
    sqlite3 *db;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) die("open", path);
    char pragma[128];
    raw_exec(db, "PRAGMA journal_mode=WAL");
    snprintf(pragma, sizeof pragma, "PRAGMA synchronous=%s", synchronous);
    raw_exec(db, pragma);
    raw_exec(db, "PRAGMA cache_size=-8192");
    raw_exec(db, "PRAGMA secure_delete=ON");
    raw_exec(db, "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID");
    sqlite3_stmt *put, *get, *begin, *commit;
    sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO kv(k, v) VALUES (?1, ?2)", -1, &put, NULL);
    sqlite3_prepare_v2(db, "SELECT v FROM kv WHERE k = ?1", -1, &get, NULL);
    sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, NULL);
    sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL);

    double t0 = now_seconds();
    for (size_t i = 0; i < w->keys; i += w->batch) {
        sqlite3_step(begin); sqlite3_reset(begin);
        for (size_t j = i; j < i + w->batch && j < w->keys; j++) {
            sqlite3_bind_blob(put, 1, w->key_text[j], (int)strlen(w->key_text[j]), SQLITE_STATIC);
            sqlite3_bind_blob(put, 2, w->value, (int)w->value_bytes, SQLITE_STATIC);
            if (sqlite3_step(put) != SQLITE_DONE) die("put", sqlite3_errmsg(db));
            sqlite3_reset(put);
        }
        if (sqlite3_step(commit) != SQLITE_DONE) die("commit", sqlite3_errmsg(db));
        sqlite3_reset(commit);
    }
    *puts_per_s = (double)w->keys / (now_seconds() - t0);

    size_t total = 0;
    t0 = now_seconds();
    for (size_t i = 0; i < w->keys; i++) {
        const char *k = w->key_text[w->order[i]];
        sqlite3_bind_blob(get, 1, k, (int)strlen(k), SQLITE_STATIC);
        if (sqlite3_step(get) != SQLITE_ROW) die("get", "missing key");
        total += (size_t)sqlite3_column_bytes(get, 0);
        (void)sqlite3_column_blob(get, 0);
        sqlite3_reset(get);
    }
    *gets_per_s = (double)w->keys / (now_seconds() - t0);
    if (total != w->keys * w->value_bytes) die("get", "wrong total");
    sqlite3_finalize(put); sqlite3_finalize(get); sqlite3_finalize(begin); sqlite3_finalize(commit);
    sqlite3_close(db);
}

/* ---- through masq.h ---------------------------------------------------------- */

static void masq_run(const workload *w, const char *dir, const char *synchronous, double *puts_per_s, double *gets_per_s) {
    char config[1024];
    snprintf(config, sizeof config,
             "{\"data_dir\": \"%s\", \"storage\": {\"plugin\": \"sqlite\", \"options\": "
             "{\"synchronous\": \"%s\", \"cache_size_kib\": 8192}}}", dir, synchronous);
    masq_store *store;
    if (masq_open_config(config, NULL, &store) != MASQ_OK) die("masq_open_config", masq_last_error());
    masq_entry *entries = malloc(w->batch * sizeof(masq_entry));

    double t0 = now_seconds();
    for (size_t i = 0; i < w->keys; i += w->batch) {
        size_t n = 0;
        for (size_t j = i; j < i + w->batch && j < w->keys; j++, n++) {
            entries[n].key = (const uint8_t *)w->key_text[j];
            entries[n].key_len = strlen(w->key_text[j]);
            entries[n].value = w->value;
            entries[n].value_len = w->value_bytes;
        }
        if (masq_set_all(store, "bench", entries, n, 0) != MASQ_OK) die("masq_set_all", masq_last_error());
    }
    *puts_per_s = (double)w->keys / (now_seconds() - t0);

    size_t total = 0;
    t0 = now_seconds();
    for (size_t i = 0; i < w->keys; i++) {
        const char *k = w->key_text[w->order[i]];
        uint8_t *value;
        size_t len;
        if (masq_get(store, "bench", (const uint8_t *)k, strlen(k), &value, &len) != MASQ_OK) die("masq_get", masq_last_error());
        total += len;
        masq_free(value);
    }
    *gets_per_s = (double)w->keys / (now_seconds() - t0);
    if (total != w->keys * w->value_bytes) die("masq_get", "wrong total");
    free(entries);
    masq_close(store);
}

static void remove_dir(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) die("cleanup", dir);
}

int main(int argc, char **argv) {
    size_t keys = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    size_t batch = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000;
    size_t value_bytes = argc > 3 ? strtoul(argv[3], NULL, 10) : 100;
    int rounds = argc > 4 ? atoi(argv[4]) : 3;
    const char *synchronous = getenv("SYNCHRONOUS") ? getenv("SYNCHRONOUS") : "full";
    workload w = make_workload(keys, batch, value_bytes);

    printf("storage bench: %zu keys, batches of %zu, %zu-byte values, synchronous=%s, best of %d rounds\n",
           keys, batch, value_bytes, synchronous, rounds);
    double best[4] = {0, 0, 0, 0};
    for (int r = 0; r < rounds; r++) {
        char dir[] = "/tmp/masq-bench-XXXXXX";
        if (!mkdtemp(dir)) die("mkdtemp", "failed");
        double rp, rg, mp, mg;
        raw_run(&w, dir, synchronous, &rp, &rg);
        masq_run(&w, dir, synchronous, &mp, &mg);
        remove_dir(dir);
        printf("  round %d: raw %.0f puts/s %.0f gets/s | masq %.0f puts/s %.0f gets/s\n", r + 1, rp, rg, mp, mg);
        if (rp > best[0]) best[0] = rp;
        if (rg > best[1]) best[1] = rg;
        if (mp > best[2]) best[2] = mp;
        if (mg > best[3]) best[3] = mg;
    }
    printf("\n%-28s %14s %14s %8s\n", "", "raw SQLite", "masq.h", "ratio");
    printf("%-28s %14.0f %14.0f %7.2fx\n", "batched puts/s", best[0], best[2], best[2] / best[0]);
    printf("%-28s %14.0f %14.0f %7.2fx\n", "point gets/s", best[1], best[3], best[3] / best[1]);
    printf("(targets: puts >= 0.70x, gets >= 0.80x)\n");
    return 0;
}

/*
 * Standalone test of the masq-cksum VFS (Sources/CMasqSQLiteChecksum).
 * Run by Tests/c/run.sh (cc ... checksum_vfs.c checksum_vfs_test.c -lsqlite3 -lpthread),
 * with a scratch directory as its argument.
 *
 * The store looks like Masq's: kv(k BLOB PRIMARY KEY, v BLOB NOT NULL)
 * WITHOUT ROWID in WAL mode, keys "R\x01key-00042", values ~40 bytes.
 */
#include "checksum_vfs.h"

#include <sqlite3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *dir;
static int failures;
static int checks;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        checks++;                                                                                                      \
        if (!(cond)) {                                                                                                 \
            failures++;                                                                                                \
            printf("    FAIL %s:%d: ", __FILE__, __LINE__);                                                            \
            printf(__VA_ARGS__);                                                                                       \
            printf("\n");                                                                                              \
        }                                                                                                              \
    } while (0)

/* SQLite's log: count checksum faults and sub-page writes. */
static int logFaults, logSubPage;
static char firstFault[300];
static pthread_mutex_t logLock = PTHREAD_MUTEX_INITIALIZER;
static void on_log(void *unused, int code, const char *msg) {
    (void)unused;
    pthread_mutex_lock(&logLock);
    if (code == SQLITE_IOERR_DATA) {
        if (logFaults++ == 0) snprintf(firstFault, sizeof firstFault, "%s", msg);
    } else if (code == SQLITE_NOTICE && strstr(msg, "sub-page")) {
        logSubPage++;
    }
    pthread_mutex_unlock(&logLock);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* dir/name, malloc'd (never freed: a test). */
static char *path(const char *name) {
    char *b = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(b, "%s/%s", dir, name);
    return b;
}

static void rm_db(const char *p) {
    char b[600];
    unlink(p);
    snprintf(b, sizeof b, "%s-wal", p);
    unlink(b);
    snprintf(b, sizeof b, "%s-shm", p);
    unlink(b);
    snprintf(b, sizeof b, "%s-journal", p);
    unlink(b);
}

static void copy_file(const char *from, const char *to) {
    rm_db(to);
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    if (!a || !b) {
        printf("cannot copy %s\n", from);
        exit(2);
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
    fclose(a);
    fclose(b);
}

/* ---- the store ---- */

static int make_key(int i, unsigned char *k) {
    k[0] = 'R';
    k[1] = 0x01;
    return 2 + sprintf((char *)k + 2, "key-%05d", i);
}

/* ~40 bytes, a function of (i, version). */
static int make_value(int i, int version, unsigned char *v) {
    int n = sprintf((char *)v, "v%d:%05d:", version, i);
    uint32_t x = (uint32_t)i * 2654435761u ^ (uint32_t)version * 40503u;
    while (n < 40) {
        x = x * 1103515245u + 12345u;
        v[n++] = (unsigned char)(x >> 16);
    }
    return n;
}

static sqlite3 *open_db(const char *p, const char *vfs) {
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
                             vfs);
    if (rc != SQLITE_OK) {
        printf("open %s: %s\n", p, db ? sqlite3_errmsg(db) : "?");
        exit(2);
    }
    sqlite3_busy_timeout(db, 10000);
    return db;
}

static int exec(sqlite3 *db, const char *sql) {
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) printf("    (%s: %s)\n", sql, err ? err : "?");
    sqlite3_free(err);
    return rc;
}

static const char *text1(sqlite3 *db, const char *sql) {
    static char out[200];
    sqlite3_stmt *s;
    out[0] = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
            snprintf(out, sizeof out, "%s", (const char *)sqlite3_column_text(s, 0));
        sqlite3_finalize(s);
    } else {
        snprintf(out, sizeof out, "error: %s", sqlite3_errmsg(db));
    }
    return out;
}

/* Open like the plugin would: VFS, enable before WAL, pragmas, table. */
/* checksums: 0 = default VFS, 1 = masq-cksum with checksums, 2 = masq-cksum
 * without reserve (pass-through). */
static sqlite3 *open_store(const char *p, int checksums, int *enabled) {
    sqlite3 *db = open_db(p, checksums ? MASQ_CKSUM_VFS_NAME : NULL);
    int on = checksums == 1 ? masq_cksum_enable(db) : 0;
    if (enabled) *enabled = on;
    exec(db, "PRAGMA journal_mode=WAL");
    exec(db, "PRAGMA synchronous=NORMAL");
    exec(db, "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID");
    return db;
}

static int put_rows(sqlite3 *db, int from, int to, int version, int batch) {
    sqlite3_stmt *s;
    unsigned char k[32], v[64];
    sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO kv(k, v) VALUES (?1, ?2)", -1, &s, NULL);
    int rc = SQLITE_OK;
    for (int i = from; i < to && rc == SQLITE_OK; i++) {
        if ((i - from) % batch == 0) rc = exec(db, "BEGIN IMMEDIATE");
        sqlite3_bind_blob(s, 1, k, make_key(i, k), SQLITE_STATIC);
        sqlite3_bind_blob(s, 2, v, make_value(i, version, v), SQLITE_STATIC);
        int r = sqlite3_step(s);
        if (r != SQLITE_DONE) rc = r;
        sqlite3_reset(s);
        if ((i - from) % batch == batch - 1 || i == to - 1) {
            if (rc == SQLITE_OK) rc = exec(db, "COMMIT");
        }
    }
    if (!sqlite3_get_autocommit(db)) exec(db, "ROLLBACK");
    sqlite3_finalize(s);
    return rc;
}

/* Look up key i: SQLITE_ROW (value checked against version, -1 = any),
 * SQLITE_DONE (absent) or the error. *bad set if the value is wrong. */
static int get_row(sqlite3 *db, sqlite3_stmt *s, int i, int version, int *bad) {
    unsigned char k[32], v[64];
    sqlite3_bind_blob(s, 1, k, make_key(i, k), SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW && bad) {
        const unsigned char *got = sqlite3_column_blob(s, 0);
        int n = sqlite3_column_bytes(s, 0);
        if (version >= 0) {
            int m = make_value(i, version, v);
            *bad = n != m || memcmp(got, v, m) != 0;
        } else { /* any version: "v<ver>:<i>:" + the right tail */
            int ver = atoi((const char *)got + 1);
            int m = make_value(i, ver, v);
            *bad = n != m || memcmp(got, v, m) != 0;
        }
    }
    sqlite3_reset(s);
    (void)db;
    return rc;
}

static int get1(sqlite3 *db, int i) {
    sqlite3_stmt *s;
    int prc = sqlite3_prepare_v2(db, "SELECT v FROM kv WHERE k = ?1", -1, &s, NULL);
    if (prc != SQLITE_OK) return prc; /* reading the schema (page 1) failed */
    int rc = get_row(db, s, i, -1, NULL);
    sqlite3_finalize(s);
    return rc;
}

/* Full scan in key order: SQLITE_DONE with *count rows, or the error. */
static int scan_all(sqlite3 *db, int *count) {
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(db, "SELECT k, v FROM kv ORDER BY k", -1, &s, NULL);
    *count = 0;
    if (rc != SQLITE_OK) return rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) (*count)++;
    sqlite3_finalize(s);
    return rc;
}

/* ---- the raw file ---- */

typedef struct {
    unsigned char *d;
    long size;
    int ps;
} Raw;

static Raw load(const char *p) {
    Raw r = {0};
    FILE *f = fopen(p, "rb");
    fseek(f, 0, SEEK_END);
    r.size = ftell(f);
    fseek(f, 0, SEEK_SET);
    r.d = malloc(r.size);
    if (fread(r.d, 1, r.size, f) != (size_t)r.size) exit(2);
    fclose(f);
    r.ps = (r.d[16] << 8) | (r.d[17] << 16);
    return r;
}

static void flip(const char *p, long off, unsigned char mask) {
    FILE *f = fopen(p, "r+b");
    fseek(f, off, SEEK_SET);
    int c = fgetc(f);
    fseek(f, off, SEEK_SET);
    fputc(c ^ mask, f);
    fclose(f);
}

static int page_type(Raw *r, int pg) { return r->d[(long)(pg - 1) * r->ps + (pg == 1 ? 100 : 0)]; }

/* File offset of key i's bytes in a leaf page of the index b-tree (0x0A). */
static long find_leaf_key(Raw *r, int i, int *pageOut) {
    unsigned char k[32];
    int n = make_key(i, k);
    for (long off = 0; off + n <= r->size; off++) {
        if (r->d[off] == 'R' && memcmp(r->d + off, k, n) == 0) {
            int pg = (int)(off / r->ps) + 1;
            if (page_type(r, pg) == 0x0A) {
                if (pageOut) *pageOut = pg;
                return off;
            }
        }
    }
    return -1;
}

/* Offset of the start of the cell that holds file offset `at` (a leaf page). */
static long cell_start(Raw *r, long at) {
    int pg = (int)(at / r->ps) + 1;
    long base = (long)(pg - 1) * r->ps, hdr = base + (pg == 1 ? 100 : 0);
    int cells = r->d[hdr + 3] << 8 | r->d[hdr + 4];
    long best = -1;
    for (int c = 0; c < cells; c++) {
        long off = base + (r->d[hdr + 8 + 2 * c] << 8 | r->d[hdr + 9 + 2 * c]);
        if (off <= at && off > best) best = off;
    }
    return best;
}

static int is_error(int rc) { return rc != SQLITE_ROW && rc != SQLITE_DONE && rc != SQLITE_OK; }

static const char *rcname(int rc) {
    static char b[8][64];
    static int i;
    char *o = b[i++ % 8];
    snprintf(o, 64, "%s (%d)", rc == SQLITE_DONE ? "not found" : rc == SQLITE_ROW ? "found" : sqlite3_errstr(rc), rc);
    return o;
}

/* After damage: the damaged key's lookup must fail, and so must a full scan. */
static void expect_detected(const char *p, int key, const char *what) {
    sqlite3 *db = open_db(p, MASQ_CKSUM_VFS_NAME);
    int rc = get1(db, key), n;
    printf("    %s: get(key-%05d) -> %s\n", what, key, rcname(rc));
    CHECK(is_error(rc), "%s: lookup of damaged key gave %s, want an error", what, rcname(rc));
    CHECK((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_CORRUPT, "%s: error is %s", what, rcname(rc));
    int src = scan_all(db, &n);
    printf("    %s: full scan -> %s after %d rows\n", what, rcname(src), n);
    CHECK(is_error(src), "%s: full scan gave %s, want an error", what, rcname(src));
    char *report = NULL;
    int vrc = masq_cksum_verify_all(db, &report);
    printf("    %s: verify_all -> %s: %s\n", what, rcname(vrc), report ? report : "");
    CHECK(vrc == SQLITE_IOERR_DATA, "%s: verify_all gave %s", what, rcname(vrc));
    sqlite3_free(report);
    sqlite3_close(db);
}

/* The same damage without checksums (a control: what the fault campaign saw). */
static void control_without(const char *plain, int key, long off, unsigned char mask, const char *what) {
    const char *c = path("control.db");
    copy_file(plain, c);
    flip(c, off, mask);
    sqlite3 *db = open_db(c, NULL);
    int n, rc = get1(db, key), src = scan_all(db, &n);
    printf("    control, same damage without checksums (%s): get -> %s; scan -> %s, %d rows\n", what, rcname(rc),
           rcname(src), n);
    sqlite3_close(db);
}

/* ---- (e) concurrency ---- */

typedef struct {
    const char *p;
    int id, errors, wrong, reads, absent;
    volatile int *stop;
} Worker;

static void *reader(void *arg) {
    Worker *w = arg;
    sqlite3 *db = open_db(w->p, MASQ_CKSUM_VFS_NAME);
    exec(db, "PRAGMA cache_size=20"); /* small cache: most lookups read the file */
    sqlite3_stmt *s;
    sqlite3_prepare_v2(db, "SELECT v FROM kv WHERE k = ?1", -1, &s, NULL);
    unsigned seed = 77 + w->id;
    while (!*w->stop) {
        int i = rand_r(&seed) % 5000, bad = 0;
        int rc = get_row(db, s, i, -1, &bad);
        w->reads++;
        if (rc == SQLITE_DONE) w->absent++;
        else if (rc != SQLITE_ROW) {
            if (w->errors++ < 3) printf("    reader %d: %s %s\n", w->id, rcname(rc), sqlite3_errmsg(db));
        }
        if (bad) w->wrong++;
        if (w->reads % 2000 == 0) {
            int n, src = scan_all(db, &n);
            if (src != SQLITE_DONE || n != 5000) {
                if (w->errors++ < 3) printf("    reader %d scan: %s, %d rows\n", w->id, rcname(src), n);
            }
        }
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return NULL;
}

static void *writer(void *arg) {
    Worker *w = arg;
    sqlite3 *db = open_db(w->p, MASQ_CKSUM_VFS_NAME);
    exec(db, "PRAGMA wal_autocheckpoint=50"); /* checkpoints while readers read */
    for (int round = 0; round < 60; round++) {
        int from = (round * 331) % 4500;
        int rc = put_rows(db, from, from + 400, 10 + round, 100);
        if (rc != SQLITE_OK && w->errors++ < 3) printf("    writer: %s %s\n", rcname(rc), sqlite3_errmsg(db));
        if (round % 10 == 9 && exec(db, "PRAGMA wal_checkpoint(PASSIVE)") != SQLITE_OK) w->errors++;
        w->reads++;
    }
    *w->stop = 1;
    sqlite3_close(db);
    return NULL;
}

/* ---- (f) bench ---- */

static void bench(void) {
    const int N = 100000;
    /* 0: default VFS, no reserve (the plugin today); 1: masq-cksum with
     * checksums; 2: masq-cksum, no reserve (pass-through): the best of two
     * runs each, interleaved. */
    double t[3][4];
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 4; k++) t[c][k] = 1e9;
    for (int run = 0; run < 6; run++) {
        int c = run % 3;
        double m[4];
        const char *p = path(c == 0 ? "bench-plain.db" : c == 1 ? "bench-cksum.db" : "bench-pass.db");
        rm_db(p);
        sqlite3 *db = open_store(p, c, NULL);
        double t0 = now();
        put_rows(db, 0, N, 1, 1000);
        exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
        m[0] = now() - t0;
        sqlite3_close(db);

        db = open_db(p, c ? MASQ_CKSUM_VFS_NAME : NULL); /* fresh connection: cold page cache */
        t0 = now();
        int n;
        scan_all(db, &n);
        m[1] = now() - t0;
        if (n != N) printf("    bench scan: %d rows\n", n);
        sqlite3_close(db);

        db = open_db(p, c ? MASQ_CKSUM_VFS_NAME : NULL);
        exec(db, "PRAGMA cache_size=-8192"); /* the plugin's default */
        sqlite3_stmt *s;
        sqlite3_prepare_v2(db, "SELECT v FROM kv WHERE k = ?1", -1, &s, NULL);
        unsigned seed = 5;
        int bad = 0, found = 0;
        t0 = now();
        for (int j = 0; j < N; j++) found += get_row(db, s, rand_r(&seed) % N, 1, &bad) == SQLITE_ROW;
        m[2] = now() - t0;
        exec(db, "PRAGMA cache_size=10"); /* nearly no cache: every lookup re-reads its pages */
        seed = 5;
        t0 = now();
        for (int j = 0; j < N; j++) found += get_row(db, s, rand_r(&seed) % N, 1, &bad) == SQLITE_ROW;
        m[3] = now() - t0;
        for (int k = 0; k < 4; k++)
            if (m[k] < t[c][k]) t[c][k] = m[k];
        if (found != 2 * N || bad) printf("    bench lookups: %d found, bad=%d\n", found, bad);
        sqlite3_finalize(s);
        sqlite3_close(db);
    }
    const char *names[4] = {"insert 100k (1000/txn) + checkpoint", "full scan, cold cache",
                            "100k random gets, 8 MiB cache", "100k random gets, 10-page cache"};
    for (int k = 0; k < 4; k++)
        printf("    %-36s default VFS %6.1f ms | masq-cksum pass-through %6.1f ms | checksums %6.1f ms | ratio "
               "checksums/default %.2f, checksums/pass-through %.2f\n",
               names[k], t[0][k] * 1e3, t[2][k] * 1e3, t[1][k] * 1e3, t[1][k] / t[0][k], t[1][k] / t[2][k]);
}

/* ---- registration ---- */

static void *reg(void *arg) {
    *(int *)arg = masq_cksum_register();
    return NULL;
}

int main(int argc, char **argv) {
    dir = argc > 1 ? argv[1] : "/tmp";
    sqlite3_config(SQLITE_CONFIG_LOG, on_log, NULL);
    printf("SQLite %s, test files in %s\n", sqlite3_libversion(), dir);

    printf("[register] 8 threads call masq_cksum_register() at once\n");
    {
        pthread_t th[8];
        int rcs[8];
        for (int i = 0; i < 8; i++) pthread_create(&th[i], NULL, reg, &rcs[i]);
        for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
        int ok = 1, count = 0;
        for (int i = 0; i < 8; i++) ok &= rcs[i] == SQLITE_OK;
        CHECK(ok && masq_cksum_register() == SQLITE_OK, "register failed");
        for (sqlite3_vfs *v = sqlite3_vfs_find(NULL); v; v = v->pNext) count += strcmp(v->zName, MASQ_CKSUM_VFS_NAME) == 0;
        CHECK(count == 1, "%d VFS named masq-cksum", count);
        CHECK(strcmp(sqlite3_vfs_find(NULL)->zName, MASQ_CKSUM_VFS_NAME) != 0, "masq-cksum became the default");
        printf("    all returned SQLITE_OK; registered once (%d), default VFS still \"%s\"\n", count,
               sqlite3_vfs_find(NULL)->zName);
    }

    /* The pristine stores: with checksums, and a plain one for controls. */
    const char *good = path("good.db"), *plain = path("plain.db");
    rm_db(good);
    rm_db(plain);
    {
        int on = 0;
        sqlite3 *db = open_store(good, 1, &on);
        CHECK(on == 1, "masq_cksum_enable on a new database returned %d", on);
        CHECK(put_rows(db, 0, 5000, 1, 500) == SQLITE_OK, "insert");
        CHECK(exec(db, "PRAGMA wal_checkpoint(TRUNCATE)") == SQLITE_OK, "checkpoint");
        printf("[create] 5000 rows through masq-cksum, WAL, checkpointed: enable=%d, PRAGMA masq_checksum=%s, "
               "journal_mode=%s\n",
               on, text1(db, "PRAGMA masq_checksum"), text1(db, "PRAGMA journal_mode"));
        sqlite3_close(db);
        db = open_store(plain, 0, NULL);
        put_rows(db, 0, 5000, 1, 500);
        sqlite3_close(db);
        Raw r = load(good);
        printf("    file: %ld bytes, page size %d, reserved bytes per page %d\n", r.size, r.ps, r.d[20]);
        CHECK(r.d[20] == 8, "reserve byte is %d", r.d[20]);
        free(r.d);
    }

    printf("[a] reopen, read every row back\n");
    {
        sqlite3 *db = open_db(good, MASQ_CKSUM_VFS_NAME);
        sqlite3_stmt *s;
        sqlite3_prepare_v2(db, "SELECT v FROM kv WHERE k = ?1", -1, &s, NULL);
        int found = 0, wrong = 0, n;
        for (int i = 0; i < 5000; i++) {
            int bad = 0;
            found += get_row(db, s, i, 1, &bad) == SQLITE_ROW;
            wrong += bad;
        }
        sqlite3_finalize(s);
        int src = scan_all(db, &n);
        char *report = NULL;
        int vrc = masq_cksum_verify_all(db, &report);
        printf("    %d/5000 found, %d wrong values; scan %s, %d rows; verify_all: %s; integrity_check: %s\n", found,
               wrong, rcname(src), n, report, text1(db, "PRAGMA integrity_check"));
        CHECK(found == 5000 && wrong == 0 && src == SQLITE_DONE && n == 5000, "read back");
        CHECK(vrc == SQLITE_OK, "verify_all %s", rcname(vrc));
        sqlite3_free(report);
        sqlite3_close(db);
    }

    printf("[b] flip 1 byte of a key inside a leaf cell\n");
    {
        const char *p = path("b.db");
        copy_file(good, p);
        Raw r = load(p);
        int pg = 0;
        long off = find_leaf_key(&r, 42, &pg);
        CHECK(off > 0, "key 42 not found in a leaf page");
        long at = off + 10; /* the last digit of "key-00042" */
        printf("    key-00042 is at offset %ld (leaf page %d); flipping byte %ld ('%c' ^ 0x01)\n", off, pg, at, r.d[at]);
        flip(p, at, 0x01);
        expect_detected(p, 42, "key byte");
        Raw q = load(plain);
        long poff = find_leaf_key(&q, 42, NULL);
        control_without(plain, 42, poff + 10, 0x01, "key byte");
        /* Other pages stay readable. */
        sqlite3 *db = open_db(p, MASQ_CKSUM_VFS_NAME);
        int rc = get1(db, 4999);
        printf("    a key on another page (key-04999) -> %s\n", rcname(rc));
        CHECK(rc == SQLITE_ROW, "undamaged key: %s", rcname(rc));
        sqlite3_close(db);
        free(r.d);
        free(q.d);
    }

    printf("[c1] flip a byte of a cell header (the payload-size varint)\n");
    {
        const char *p = path("c1.db");
        copy_file(good, p);
        Raw r = load(p);
        int pg = 0;
        long off = find_leaf_key(&r, 2500, &pg);
        long cell = cell_start(&r, off);
        printf("    key-02500's cell starts at offset %ld (page %d), header byte 0x%02x\n", cell, pg, r.d[cell]);
        CHECK(cell > 0 && cell < off, "cell not found");
        flip(p, cell, 0x04);
        expect_detected(p, 2500, "cell header");
        Raw q = load(plain);
        long pcell = cell_start(&q, find_leaf_key(&q, 2500, NULL));
        control_without(plain, 2500, pcell, 0x04, "cell header");
        free(r.d);
        free(q.d);
    }

    printf("[c2] flip a byte at a random place of a random page\n");
    {
        const char *p = path("c2.db");
        copy_file(good, p);
        Raw r = load(p);
        unsigned seed = (unsigned)time(NULL);
        int pages = (int)(r.size / r.ps);
        int pg = 2 + rand_r(&seed) % (pages - 1);
        int at = rand_r(&seed) % r.ps;
        int key = -1;
        /* A key on that page, if it is a leaf, to look up. */
        for (long o = (long)(pg - 1) * r.ps; o < (long)pg * r.ps - 11 && key < 0; o++)
            if (r.d[o] == 'R' && r.d[o + 1] == 1 && memcmp(r.d + o + 2, "key-", 4) == 0) key = atoi((char *)r.d + o + 6);
        printf("    seed %u: page %d of %d (type 0x%02x), byte %d of the page%s, key on it: %d\n", seed, pg, pages,
               page_type(&r, pg), at, at >= r.ps - 8 ? " (the checksum itself)" : "", key);
        flip(p, (long)(pg - 1) * r.ps + at, 0x20);
        expect_detected(p, key >= 0 ? key : 0, "random page");
        free(r.d);
    }

    printf("[c3] flip header byte 20 (reserved bytes 8 -> 9) and a byte of page 1's schema\n");
    {
        const char *p = path("c3.db");
        copy_file(good, p);
        flip(p, 20, 0x01);
        sqlite3 *db = open_db(p, MASQ_CKSUM_VFS_NAME);
        int rc = get1(db, 1);
        printf("    reserve byte: get -> %s\n", rcname(rc));
        CHECK(is_error(rc), "header byte 20 damage not detected: %s", rcname(rc));
        sqlite3_close(db);
        copy_file(good, p);
        Raw r = load(p);
        flip(p, r.ps - 200, 0x02); /* page 1's cell content: the schema record */
        db = open_db(p, MASQ_CKSUM_VFS_NAME);
        rc = get1(db, 1);
        printf("    schema record on page 1: get -> %s\n", rcname(rc));
        CHECK(is_error(rc), "page 1 damage not detected: %s", rcname(rc));
        sqlite3_close(db);
        free(r.d);
    }

    printf("[d] a database made without the VFS and without reserve bytes\n");
    {
        const char *p = path("legacy.db");
        copy_file(plain, p);
        sqlite3 *db = open_db(p, MASQ_CKSUM_VFS_NAME);
        int on = masq_cksum_enable(db);
        exec(db, "PRAGMA journal_mode=WAL");
        int n, src = scan_all(db, &n);
        int wrc = put_rows(db, 5000, 5100, 1, 50);
        int g = get1(db, 5050);
        char *report = NULL;
        int vrc = masq_cksum_verify_all(db, &report);
        printf("    enable=%d, PRAGMA masq_checksum=%s, scan %s %d rows, 100 writes %s, get new key %s, verify_all %s: %s\n",
               on, text1(db, "PRAGMA masq_checksum"), rcname(src), n, rcname(wrc), rcname(g), rcname(vrc), report);
        CHECK(on == 0 && src == SQLITE_DONE && n == 5000 && wrc == SQLITE_OK && g == SQLITE_ROW, "pass-through");
        CHECK(vrc == SQLITE_NOTFOUND, "verify_all on an unchecked file: %s", rcname(vrc));
        sqlite3_free(report);
        exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
        sqlite3_close(db);
        db = open_db(p, NULL);
        printf("    reopened without the VFS: integrity_check %s\n", text1(db, "PRAGMA integrity_check"));
        CHECK(strcmp(text1(db, "PRAGMA integrity_check"), "ok") == 0, "legacy file damaged");
        sqlite3_close(db);

        printf("  [d2] upgrade: enable, VACUUM, checkpoint\n");
        db = open_db(p, MASQ_CKSUM_VFS_NAME);
        exec(db, "PRAGMA journal_mode=WAL");
        int before = masq_cksum_enable(db);
        int vac = exec(db, "VACUUM");
        exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
        int after = masq_cksum_enable(db);
        report = NULL;
        vrc = masq_cksum_verify_all(db, &report);
        src = scan_all(db, &n);
        printf("    enable before=%d, VACUUM %s, enable after=%d, masq_checksum=%s, scan %d rows, verify_all: %s\n",
               before, rcname(vac), after, text1(db, "PRAGMA masq_checksum"), n, report);
        CHECK(before == 0 && vac == SQLITE_OK && after == 1 && vrc == SQLITE_OK && n == 5100, "upgrade");
        sqlite3_free(report);
        sqlite3_close(db);
        Raw r = load(p);
        long off = find_leaf_key(&r, 777, NULL);
        flip(p, off + 10, 0x01);
        expect_detected(p, 777, "upgraded file, key byte");
        free(r.d);

        printf("  [d3] a checksummed file opened WITHOUT the VFS still works (reserve bytes are ignored)\n");
        db = open_db(good, NULL);
        printf("    integrity_check %s, get -> %s\n", text1(db, "PRAGMA integrity_check"), rcname(get1(db, 3)));
        CHECK(strcmp(text1(db, "PRAGMA integrity_check"), "ok") == 0, "plain open of checksummed file");
        sqlite3_close(db);
    }

    printf("[d4] other ways in: page_size 8192 set after enable; rollback-journal mode\n");
    {
        const char *p = path("ps.db");
        rm_db(p);
        sqlite3 *db = open_db(p, MASQ_CKSUM_VFS_NAME);
        int on = masq_cksum_enable(db);
        exec(db, "PRAGMA page_size=8192");
        exec(db, "PRAGMA journal_mode=DELETE");
        exec(db, "CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID");
        put_rows(db, 0, 3000, 1, 100);
        put_rows(db, 0, 3000, 2, 1000); /* overwrite: rollback journal + in-place page writes */
        char *report = NULL;
        int vrc = masq_cksum_verify_all(db, &report);
        Raw r = load(p);
        printf("    enable=%d page size %d reserve %d, journal_mode=%s, verify_all: %s\n", on, r.ps, r.d[20],
               text1(db, "PRAGMA journal_mode"), report);
        CHECK(on == 1 && r.ps == 8192 && r.d[20] == 8 && vrc == SQLITE_OK, "page_size/rollback");
        sqlite3_free(report);
        sqlite3_close(db);
        long off = find_leaf_key(&r, 1234, NULL);
        flip(p, off + 9, 0x01);
        expect_detected(p, 1234, "rollback mode, key byte");
        free(r.d);
    }

    printf("[e] 1 writer + 2 readers, separate connections, WAL, frequent checkpoints\n");
    {
        const char *p = path("e.db");
        copy_file(good, p);
        volatile int stop = 0;
        Worker w[3] = {{p, 0, 0, 0, 0, 0, &stop}, {p, 1, 0, 0, 0, 0, &stop}, {p, 2, 0, 0, 0, 0, &stop}};
        pthread_t th[3];
        int faultsBefore = logFaults;
        double t0 = now();
        pthread_create(&th[0], NULL, writer, &w[0]);
        pthread_create(&th[1], NULL, reader, &w[1]);
        pthread_create(&th[2], NULL, reader, &w[2]);
        for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
        sqlite3 *db = open_db(p, MASQ_CKSUM_VFS_NAME);
        exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
        char *report = NULL;
        int vrc = masq_cksum_verify_all(db, &report);
        printf("    %.1f s: writer 60 txns x 400 rows (%d errors); readers %d + %d gets (%d + %d errors, %d + %d wrong "
               "values, %d + %d absent)\n",
               now() - t0, w[0].errors, w[1].reads, w[2].reads, w[1].errors, w[2].errors, w[1].wrong, w[2].wrong,
               w[1].absent, w[2].absent);
        printf("    checksum faults logged meanwhile: %d; verify_all: %s; integrity_check: %s\n",
               logFaults - faultsBefore, report, text1(db, "PRAGMA integrity_check"));
        CHECK(w[0].errors + w[1].errors + w[2].errors == 0 && w[1].wrong + w[2].wrong == 0, "concurrency errors");
        CHECK(w[1].absent + w[2].absent == 0 && w[1].reads > 0 && w[2].reads > 0, "readers");
        CHECK(logFaults == faultsBefore && vrc == SQLITE_OK, "false checksum faults");
        sqlite3_free(report);
        sqlite3_close(db);
    }

    printf("[f] bench (no timed assertions)\n");
    bench();

    printf("[log] checksum faults logged by SQLite: %d (first: %s); sub-page writes: %d\n", logFaults, firstFault,
           logSubPage);
    CHECK(logSubPage == 0, "sub-page writes happened (%d)", logSubPage);
    printf("%s: %d checks, %d failed\n", failures ? "FAILED" : "PASSED", checks, failures);
    return failures ? 1 : 0;
}

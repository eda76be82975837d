/*
 * backup_bench — masq_backup / masq_restore of a store of N keys (1 KB
 * values by default) beside SQLite's own online backup (sqlite3_backup_*,
 * what `sqlite3 db ".backup file"` runs) of the same database file, in the
 * same run.
 *
 * usage: backup_bench [keys (100000)] [value bytes (1024)] [page size (0: the default 4096)]
 *
 * Values are text (base64 of random bytes, like JSON of photos' metadata
 * would be: incompressible enough). The store uses synchronous=normal for
 * the fill only; the backup is then taken from a closed-and-reopened store.
 */
#define _DEFAULT_SOURCE
#include "masq.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void must(int rc, const char *what) {
    if (rc != MASQ_OK) {
        fprintf(stderr, "%s: %s (%s)\n", what, masq_status_name(rc), masq_last_error());
        exit(1);
    }
}

static long long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

static long long dir_size(const char *dir) {
    char command[600];
    snprintf(command, sizeof command, "du -sb '%s' | cut -f1", dir);
    FILE *p = popen(command, "r");
    long long size = 0;
    if (p && fscanf(p, "%lld", &size) != 1) size = 0;
    if (p) pclose(p);
    return size;
}

static masq_store *open_store(const char *dir, int page_size) {
    char config[600], page[64] = "";
    if (page_size) snprintf(page, sizeof page, ", \"page_size\": %d", page_size);
    snprintf(config, sizeof config,
             "{\"data_dir\": \"%s\", \"storage\": {\"plugin\": \"sqlite\", \"options\": {\"synchronous\": \"normal\"%s}}}", dir, page);
    masq_store *s = NULL;
    must(masq_open_config(config, NULL, &s), "open");
    return s;
}

int main(int argc, char **argv) {
    size_t keys = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    size_t value_bytes = argc > 2 ? strtoul(argv[2], NULL, 10) : 1024;
    int page_size = argc > 3 ? atoi(argv[3]) : 0;
    char root[] = "/tmp/masq-backup-bench-XXXXXX";
    if (!mkdtemp(root)) return 2;
    char src[128], dst[128], bak_pw[128], bak_rk[128], db[160], sqlite_copy[160], restored_cfg[400];
    snprintf(src, sizeof src, "%s/src", root);
    snprintf(dst, sizeof dst, "%s/restored", root);
    snprintf(bak_pw, sizeof bak_pw, "%s/store.bak", root);
    snprintf(bak_rk, sizeof bak_rk, "%s/store-rk.bak", root);
    snprintf(db, sizeof db, "%s/masq.db", src);
    snprintf(sqlite_copy, sizeof sqlite_copy, "%s/sqlite-backup.db", root);

    /* Fill: batches of 10,000 keys, one transaction each. */
    masq_store *s = open_store(src, page_size);
    const size_t batch = 10000;
    masq_entry *entries = calloc(batch, sizeof *entries);
    char *keybuf = malloc(batch * 32);
    uint8_t *values = malloc(batch * value_bytes);
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t random[4096];
    double t = now();
    for (size_t done = 0; done < keys;) {
        size_t n = keys - done < batch ? keys - done : batch;
        for (size_t i = 0; i < n; i++) {
            char *k = keybuf + i * 32;
            int kl = snprintf(k, 32, "item-%08zu", done + i);
            uint8_t *v = values + i * value_bytes;
            if (i % 4 == 0) must(masq_crypto_random(random, sizeof random), "random");
            for (size_t j = 0; j < value_bytes; j++) v[j] = (uint8_t)alphabet[random[(j + i * 61) % sizeof random] & 63];
            entries[i] = (masq_entry){(const uint8_t *)k, (size_t)kl, v, value_bytes};
        }
        must(masq_set_all(s, "photos", entries, n, 0), "set_all");
        done += n;
    }
    double fill = now() - t;
    must(masq_close(s), "close");
    s = open_store(src, page_size);
    long long db_bytes = file_size(db);
    double logical = (double)keys * (double)value_bytes / 1e6;
    printf("store: %zu keys of %zu bytes (%.0f MB of values), filled in %.2f s; masq.db %.1f MB%s\n", keys, value_bytes, logical, fill,
           (double)db_bytes / 1e6, page_size ? "" : " (4 KiB pages)");

    /* masq backups: under a passphrase (scrypt N=2^17, ~0.5 s, included) and under a recovery key. */
    t = now();
    must(masq_backup(s, bak_pw, (const uint8_t *)"bench passphrase", 16), "backup");
    double backup_pw = now() - t;
    char *key = NULL;
    t = now();
    must(masq_backup_with_recovery_key(s, bak_rk, &key), "backup (recovery key)");
    double backup_rk = now() - t;
    long long bak_bytes = file_size(bak_pw);

    t = now();
    must(masq_backup_verify(bak_rk, (const uint8_t *)key, strlen(key), NULL), "verify");
    double verify = now() - t;

    if (page_size)
        snprintf(restored_cfg, sizeof restored_cfg, "{\"data_dir\": \"%s\", \"storage\": {\"plugin\": \"sqlite\", \"options\": {\"page_size\": %d}}}", dst, page_size);
    else
        snprintf(restored_cfg, sizeof restored_cfg, "{\"data_dir\": \"%s\"}", dst);
    t = now();
    must(masq_restore_config(restored_cfg, NULL, bak_rk, (const uint8_t *)key, strlen(key)), "restore");
    double restore = now() - t;
    masq_free(key);
    long long restored_bytes = dir_size(dst);
    masq_store *r = NULL;
    must(masq_open_config(restored_cfg, NULL, &r), "open restored");
    uint8_t *v = NULL;
    size_t vl = 0;
    char probe[32];
    int pl = snprintf(probe, sizeof probe, "item-%08zu", keys / 2);
    must(masq_get(r, "photos", (const uint8_t *)probe, (size_t)pl, &v, &vl), "get from the restored store");
    if (vl != value_bytes) { fprintf(stderr, "restored value has %zu bytes\n", vl); return 1; }
    masq_free(v);
    must(masq_close(r), "close restored");

    /* SQLite's online backup of the same file (what `sqlite3 masq.db ".backup copy"` does). */
    sqlite3 *from = NULL, *to = NULL;
    t = now();
    if (sqlite3_open_v2(db, &from, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK || sqlite3_open(sqlite_copy, &to) != SQLITE_OK) return 1;
    sqlite3_backup *b = sqlite3_backup_init(to, "main", from, "main");
    if (!b || sqlite3_backup_step(b, -1) != SQLITE_DONE || sqlite3_backup_finish(b) != SQLITE_OK) {
        fprintf(stderr, "sqlite3 backup: %s\n", sqlite3_errmsg(to));
        return 1;
    }
    sqlite3_close(to);
    double sqlite_backup = now() - t;
    sqlite3_close(from);
    long long sqlite_bytes = file_size(sqlite_copy);
    must(masq_close(s), "close");

    printf("%-44s %8s %10s %10s\n", "", "seconds", "MB/s (values)", "file MB");
    printf("%-44s %8.2f %10.0f %10.1f\n", "masq backup, passphrase (scrypt N=2^17 incl.)", backup_pw, logical / backup_pw, (double)bak_bytes / 1e6);
    printf("%-44s %8.2f %10.0f %10.1f\n", "masq backup, recovery key", backup_rk, logical / backup_rk, (double)file_size(bak_rk) / 1e6);
    printf("%-44s %8.2f %10.0f %10s\n", "masq backup verify (decrypt all)", verify, logical / verify, "");
    printf("%-44s %8.2f %10.0f %10.1f\n", "masq restore (recovery key) into SQLite", restore, logical / restore, (double)restored_bytes / 1e6);
    printf("%-44s %8.2f %10.0f %10.1f\n", "sqlite3 .backup of masq.db (sqlite3_backup)", sqlite_backup, logical / sqlite_backup, (double)sqlite_bytes / 1e6);
    printf("ratio: masq backup / sqlite3 .backup = %.2f (recovery key), %.2f (passphrase); backup file / sqlite copy = %.2f\n",
           backup_rk / sqlite_backup, backup_pw / sqlite_backup, (double)bak_bytes / (double)sqlite_bytes);
    printf("ratio: masq restore / sqlite3 .backup = %.2f\n", restore / sqlite_backup);

    char command[160];
    snprintf(command, sizeof command, "rm -rf '%s'", root);
    return system(command) == 0 ? 0 : 1;
}

/*
 * hello.c — the smallest useful Masq program in C.
 *
 *   cc hello.c $(pkg-config --cflags --libs masq) -o hello
 *   ./hello /tmp/hello-data
 *
 * It opens (or creates) a store in the given directory with the default
 * SQLite plugin, watches a namespace, writes, reads and lists.
 */
#define _DEFAULT_SOURCE
#include <masq.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void on_change(void *ctx, const masq_change *change) {
    int *seen = ctx;
    printf("watch: %s %.*s\n", change->kind == MASQ_CHANGE_PUT ? "put" : "delete",
           (int)change->key_len, (const char *)change->key);
    (*seen)++;
}

static int print_entry(void *ctx, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len) {
    (void)ctx;
    printf("  %.*s = %.*s\n", (int)key_len, (const char *)key, (int)value_len, (const char *)value);
    return 0;
}

static int fail(const char *what) {
    fprintf(stderr, "hello: %s: %s\n", what, masq_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "hello-data";
    char config[1024];
    snprintf(config, sizeof config, "{\"data_dir\": \"%s\", \"storage\": {\"plugin\": \"sqlite\"}}", dir);

    masq_store *store;
    if (masq_open_config(config, NULL, &store) != MASQ_OK) return fail("open");
    printf("masq %s, store in %s\n", masq_version(), dir);

    int seen = 0;
    uint64_t watch;
    if (masq_watch(store, "hello", NULL, 0, on_change, &seen, &watch) != MASQ_OK) return fail("watch");

    const char *greeting = "bonjour";
    if (masq_put(store, "hello", (const uint8_t *)"greeting", 8, (const uint8_t *)greeting, strlen(greeting)) != MASQ_OK)
        return fail("put");
    masq_entry batch[2] = {
        {(const uint8_t *)"lang/fr", 7, (const uint8_t *)"bonjour", 7},
        {(const uint8_t *)"lang/en", 7, (const uint8_t *)"hello", 5},
    };
    if (masq_set_all(store, "hello", batch, 2, 0) != MASQ_OK) return fail("set_all");

    uint8_t *value;
    size_t len;
    if (masq_get(store, "hello", (const uint8_t *)"greeting", 8, &value, &len) != MASQ_OK) return fail("get");
    printf("greeting = %.*s\n", (int)len, (const char *)value);
    masq_free(value);

    printf("keys under lang/:\n");
    if (masq_list(store, "hello", (const uint8_t *)"lang/", 5, 0, print_entry, NULL) != MASQ_OK) return fail("list");

    for (int i = 0; i < 1000 && seen < 3; i++) usleep(1000); /* watch events arrive on another thread */
    masq_unwatch(store, watch);
    if (masq_close(store) != MASQ_OK) return fail("close");
    printf("%d changes watched\n", seen);
    return seen == 3 ? 0 : 1;
}

/*
 * api_test — every function of masq.h and its error paths, from C, through
 * the built libmasq.so and real plugins.
 *
 * usage: api_test <storage plugin name> <bad plugin dir>
 *        (MASQ_PLUGIN_PATH must reach the storage plugin; see Tests/c/run.sh)
 */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L
#include "masq.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static const char *plugin;
static const char *bad_dir;
static char data_dir[256];

static masq_store *open_store(const char *limits) {
    char config[1024];
    snprintf(config, sizeof config, "{\"data_dir\": \"%s\", \"storage\": {\"plugin\": \"%s\"}%s%s}",
             data_dir, plugin, limits ? ", \"limits\": " : "", limits ? limits : "");
    masq_store *store = NULL;
    CHECK_RC(masq_open_config(config, NULL, &store), MASQ_OK);
    CHECK(store != NULL);
    return store;
}

static void fresh_data_dir(void) {
    snprintf(data_dir, sizeof data_dir, "/tmp/masq-ctest-XXXXXX");
    if (!mkdtemp(data_dir)) { perror("mkdtemp"); exit(1); }
    remember_dir(data_dir);
}

static int expect_value(masq_store *s, const char *ns, const char *key, const char *value) {
    uint8_t *v = NULL;
    size_t n = 0;
    int rc = masq_get(s, ns, B(key), strlen(key), &v, &n);
    int ok = rc == MASQ_OK && n == strlen(value) && memcmp(v, value, n) == 0;
    masq_free(v);
    return ok;
}

/* ---- version, errors, free ---------------------------------------------- */

static void test_version_and_status(void) {
    CHECK(strcmp(masq_version(), MASQ_VERSION_STRING) == 0);
    CHECK(masq_version_number() == MASQ_VERSION_NUMBER);
    CHECK(strcmp(masq_status_name(MASQ_OK), "MASQ_OK") == 0);
    CHECK(strcmp(masq_status_name(MASQ_E_NOT_FOUND), "MASQ_E_NOT_FOUND") == 0);
    CHECK(strcmp(masq_status_name(MASQ_E_INTERNAL), "MASQ_E_INTERNAL") == 0);
    CHECK(strcmp(masq_status_name(-5), "MASQ_E_UNKNOWN") == 0);
    CHECK(strcmp(masq_status_name(1000), "MASQ_E_UNKNOWN") == 0);
    masq_free(NULL);
    CHECK_RC(masq_close(NULL), MASQ_OK);
    CHECK(masq_last_error()[0] == '\0');
    CHECK(masq_last_error_code() == MASQ_OK);
}

/* ---- open ----------------------------------------------------------------- */

static void test_open_errors(void) {
    masq_store *store = (masq_store *)0x1;
    CHECK_RC(masq_open(NULL, &store), MASQ_E_INVALID);
    CHECK(store == NULL);
    CHECK_RC(masq_open("/tmp/x.json", NULL), MASQ_E_INVALID);
    CHECK_RC(masq_open("/nonexistent/masq.json", &store), MASQ_E_CONFIG);
    CHECK(strstr(masq_last_error(), "/nonexistent/masq.json") != NULL);
    CHECK_RC(masq_open_config(NULL, NULL, &store), MASQ_E_INVALID);
    CHECK_RC(masq_open_config("{not json", NULL, &store), MASQ_E_CONFIG);
    CHECK_RC(masq_open_config("{\"storage\": {\"plugin\": \"sqlite\"}, \"bogus\": 1}", NULL, &store), MASQ_E_CONFIG);
    CHECK(strstr(masq_last_error(), "bogus") != NULL);
    CHECK_RC(masq_open_config("{\"storage\": {\"plugin\": \"nosuchplugin\"}}", NULL, &store), MASQ_E_PLUGIN);
    CHECK(strstr(masq_last_error(), "libmasq_storage_nosuchplugin.so") != NULL);
    CHECK_RC(masq_open_config("{\"limits\": {\"max_key_bytes\": -1}}", NULL, &store), MASQ_E_CONFIG);
    CHECK_RC(masq_open_config("\xff\xfe", NULL, &store), MASQ_E_INVALID);

    /* A config file on disk, with a path relative to the file. */
    char path[512], config[512];
    snprintf(path, sizeof path, "%s/masq.json", data_dir);
    FILE *f = fopen(path, "w");
    snprintf(config, sizeof config, "{\"data_dir\": \"sub/dir\", \"storage\": {\"plugin\": \"%s\"}}", plugin);
    fputs(config, f);
    fclose(f);
    CHECK_RC(masq_open(path, &store), MASQ_OK);
    CHECK_RC(masq_put(store, "app", B("k"), 1, B("v"), 1), MASQ_OK);
    CHECK_RC(masq_close(store), MASQ_OK);
    char sub[512];
    snprintf(sub, sizeof sub, "%s/sub/dir", data_dir);
    CHECK(access(sub, F_OK) == 0);

    /* A corrupt config file. */
    f = fopen(path, "w");
    fputs("{\"storage\": ", f);
    fclose(f);
    CHECK_RC(masq_open(path, &store), MASQ_E_CONFIG);
}

static void test_bad_plugins(void) {
    static const struct { const char *name; int status; const char *fragment; } cases[] = {
        {"badabi", MASQ_E_ABI, "ABI 99"},
        {"wrongkind", MASQ_E_PLUGIN, "not a storage plugin"},
        {"nullvtable", MASQ_E_PLUGIN, "NULL vtable"},
        {"shortvtable", MASQ_E_PLUGIN, "too short"},
        {"nullmember", MASQ_E_PLUGIN, "NULL"},
        {"nulldescriptor", MASQ_E_PLUGIN, "returned NULL"},
        {"noentry", MASQ_E_PLUGIN, "masq_plugin_entry"},
        {"notelf", MASQ_E_PLUGIN, "cannot load"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char config[1024];
        snprintf(config, sizeof config, "{\"data_dir\": \"%s\", \"plugin_path\": [\"%s\"], \"storage\": {\"plugin\": \"%s\"}}",
                 data_dir, bad_dir, cases[i].name);
        masq_store *store = NULL;
        CHECK_RC(masq_open_config(config, NULL, &store), cases[i].status);
        if (strstr(masq_last_error(), cases[i].fragment) == NULL) {
            failures++;
            fprintf(stderr, "plugin %s: message lacks \"%s\": %s\n", cases[i].name, cases[i].fragment, masq_last_error());
        }
        CHECK(store == NULL);
    }
}

/* ---- reads and writes ------------------------------------------------------- */

static void test_put_get_delete(void) {
    masq_store *s = open_store("{\"max_key_bytes\": 8, \"max_value_bytes\": 16, \"max_namespace_bytes\": 10}");
    uint8_t *v = (uint8_t *)0x1;
    size_t n = 99;

    CHECK_RC(masq_put(s, "app", B("key"), 3, B("value"), 5), MASQ_OK);
    CHECK(expect_value(s, "app", "key", "value"));
    CHECK_RC(masq_put(s, "app", B("key"), 3, B("other"), 5), MASQ_OK);
    CHECK(expect_value(s, "app", "key", "other"));
    CHECK(!expect_value(s, "app2", "key", "other"));

    /* empty value: a non-NULL pointer to zero bytes */
    CHECK_RC(masq_put(s, "app", B("empty"), 5, NULL, 0), MASQ_OK);
    CHECK_RC(masq_get(s, "app", B("empty"), 5, &v, &n), MASQ_OK);
    CHECK(v != NULL && n == 0);
    masq_free(v);

    /* binary keys and values, embedded NULs */
    CHECK_RC(masq_put(s, "app", B("\0\1\2"), 3, B("\0\0x"), 3), MASQ_OK);
    CHECK_RC(masq_get(s, "app", B("\0\1\2"), 3, &v, &n), MASQ_OK);
    CHECK(n == 3 && memcmp(v, "\0\0x", 3) == 0);
    masq_free(v);

    /* misses */
    CHECK_RC(masq_get(s, "app", B("nope"), 4, &v, &n), MASQ_E_NOT_FOUND);
    CHECK(v == NULL && n == 0);
    CHECK_RC(masq_delete(s, "app", B("key"), 3), MASQ_OK);
    CHECK_RC(masq_get(s, "app", B("key"), 3, &v, &n), MASQ_E_NOT_FOUND);
    CHECK_RC(masq_delete(s, "app", B("key"), 3), MASQ_OK);
    CHECK_RC(masq_delete(s, "app", B("never"), 5), MASQ_OK);

    /* bad arguments: an error, nothing written */
    CHECK_RC(masq_put(NULL, "app", B("k"), 1, B("v"), 1), MASQ_E_INVALID);
    CHECK_RC(masq_put(s, NULL, B("k"), 1, B("v"), 1), MASQ_E_INVALID);
    CHECK_RC(masq_put(s, "", B("k"), 1, B("v"), 1), MASQ_E_INVALID);
    CHECK_RC(masq_put(s, "\xc3\x28", B("k"), 1, B("v"), 1), MASQ_E_INVALID);
    CHECK(strstr(masq_last_error(), "UTF-8") != NULL);
    CHECK_RC(masq_put(s, "tab\there", B("k"), 1, B("v"), 1), MASQ_E_INVALID);
    CHECK_RC(masq_put(s, "namespace-too-long", B("k"), 1, B("v"), 1), MASQ_E_TOO_LARGE);
    CHECK_RC(masq_put(s, "app", NULL, 1, B("v"), 1), MASQ_E_INVALID);
    CHECK_RC(masq_put(s, "app", B("k"), 0, B("v"), 1), MASQ_E_INVALID);
    CHECK_RC(masq_put(s, "app", B("k"), 1, NULL, 1), MASQ_E_INVALID);
    CHECK_RC(masq_put(s, "app", B("123456789"), 9, B("v"), 1), MASQ_E_TOO_LARGE);
    CHECK(strstr(masq_last_error(), "max_key_bytes") != NULL);
    CHECK_RC(masq_put(s, "app", B("k"), 1, B("12345678901234567"), 17), MASQ_E_TOO_LARGE);
    CHECK(strstr(masq_last_error(), "max_value_bytes") != NULL);
    CHECK_RC(masq_get(s, "app", B("k"), 1, NULL, &n), MASQ_E_INVALID);
    CHECK_RC(masq_get(s, "app", B("k"), 1, &v, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_get(NULL, "app", B("k"), 1, &v, &n), MASQ_E_INVALID);
    CHECK_RC(masq_delete(s, "app", NULL, 3), MASQ_E_INVALID);
    CHECK_RC(masq_delete(NULL, "app", B("k"), 1), MASQ_E_INVALID);
    CHECK(expect_value(s, "app", "empty", ""));

    /* the error state is per call: a success clears it */
    CHECK_RC(masq_put(s, "app", B("ok"), 2, B("1"), 1), MASQ_OK);
    CHECK(masq_last_error()[0] == '\0');

    uint64_t replica = 0;
    CHECK_RC(masq_replica_id(s, &replica), MASQ_OK);
    CHECK(replica != 0);
    CHECK_RC(masq_replica_id(s, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_replica_id(NULL, &replica), MASQ_E_INVALID);
    CHECK_RC(masq_close(s), MASQ_OK);
}

typedef struct { int count; int stop_after; size_t total; int saw_null_value; masq_store *store; } list_state;

static int on_entry(void *ctx, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len) {
    list_state *st = ctx;
    (void)key;
    st->count++;
    st->total += key_len + value_len;
    if (value == NULL) st->saw_null_value = 1;
    if (st->store) masq_put(st->store, "copy", key, key_len, value, value_len); /* writes from inside the callback */
    return st->stop_after && st->count >= st->stop_after;
}

static void test_list_and_batches(void) {
    masq_store *s = open_store("{\"max_batch_entries\": 1000}");
    masq_entry entries[600];
    char keys[600][16];
    for (int i = 0; i < 600; i++) {
        snprintf(keys[i], sizeof keys[i], "%s/%04d", i % 2 ? "odd" : "even", i);
        entries[i].key = B(keys[i]);
        entries[i].key_len = strlen(keys[i]);
        entries[i].value = B("value");
        entries[i].value_len = 5;
    }
    CHECK_RC(masq_set_all(s, "app", entries, 600, 0), MASQ_OK);

    list_state st = {0};
    CHECK_RC(masq_list(s, "app", B("odd/"), 4, 0, on_entry, &st), MASQ_OK);
    CHECK(st.count == 300 && !st.saw_null_value);
    memset(&st, 0, sizeof st);
    CHECK_RC(masq_list(s, "app", NULL, 0, MASQ_LIST_KEYS_ONLY, on_entry, &st), MASQ_OK);
    CHECK(st.count == 600 && st.saw_null_value);
    memset(&st, 0, sizeof st);
    st.stop_after = 7;
    CHECK_RC(masq_list(s, "app", NULL, 0, 0, on_entry, &st), MASQ_OK);
    CHECK(st.count == 7);
    memset(&st, 0, sizeof st);
    st.store = s;
    CHECK_RC(masq_list(s, "app", B("even/"), 5, 0, on_entry, &st), MASQ_OK);
    CHECK(st.count == 300);
    CHECK(expect_value(s, "copy", "even/0598", "value"));
    CHECK_RC(masq_list(s, "app", NULL, 0, 0x80, on_entry, &st), MASQ_E_INVALID);
    CHECK_RC(masq_list(s, "app", NULL, 0, 0, NULL, &st), MASQ_E_INVALID);
    CHECK_RC(masq_list(s, "app", NULL, 3, 0, on_entry, &st), MASQ_E_INVALID);
    memset(&st, 0, sizeof st);
    CHECK_RC(masq_list(s, "nothing-here", NULL, 0, 0, on_entry, &st), MASQ_OK);
    CHECK(st.count == 0);

    /* get_all: one allocation, sorted */
    masq_entry *all = NULL;
    size_t count = 0;
    CHECK_RC(masq_get_all(s, "app", &all, &count), MASQ_OK);
    CHECK(count == 600 && all != NULL);
    int sorted = 1;
    for (size_t i = 1; i < count; i++) {
        size_t a = all[i - 1].key_len, b = all[i].key_len;
        int c = memcmp(all[i - 1].key, all[i].key, a < b ? a : b);
        if (c > 0 || (c == 0 && a >= b)) sorted = 0;
    }
    CHECK(sorted);
    CHECK(all[0].key_len == 9 && memcmp(all[0].key, "even/0000", 9) == 0);
    CHECK(all[599].value_len == 5 && memcmp(all[599].value, "value", 5) == 0);
    masq_free(all); /* one free releases everything */
    CHECK_RC(masq_get_all(s, "empty-namespace", &all, &count), MASQ_OK);
    CHECK(all == NULL && count == 0);
    CHECK_RC(masq_get_all(s, "app", NULL, &count), MASQ_E_INVALID);
    CHECK_RC(masq_get_all(s, "app", &all, NULL), MASQ_E_INVALID);

    /* set_all: deletes, replace, atomicity */
    masq_entry mixed[3] = {
        {B("even/0000"), 9, NULL, 0},        /* delete */
        {B("new"), 3, B("fresh"), 5},
        {B("odd/0001"), 8, B("changed"), 7},
    };
    CHECK_RC(masq_set_all(s, "app", mixed, 3, 0), MASQ_OK);
    CHECK(!expect_value(s, "app", "even/0000", "value"));
    CHECK(expect_value(s, "app", "new", "fresh"));
    CHECK(expect_value(s, "app", "odd/0001", "changed"));

    masq_entry bad[2] = {{B("good"), 4, B("v"), 1}, {NULL, 3, B("v"), 1}};
    CHECK_RC(masq_set_all(s, "app", bad, 2, 0), MASQ_E_INVALID);
    CHECK(strstr(masq_last_error(), "entry 1") != NULL);
    CHECK(!expect_value(s, "app", "good", "v"));
    masq_entry bad_value[1] = {{B("k"), 1, NULL, 4}};
    CHECK_RC(masq_set_all(s, "app", bad_value, 1, 0), MASQ_E_INVALID);
    CHECK_RC(masq_set_all(s, "app", NULL, 2, 0), MASQ_E_INVALID);
    CHECK_RC(masq_set_all(s, "app", NULL, 0, 0), MASQ_OK);
    CHECK_RC(masq_set_all(s, "app", mixed, 3, 0x10), MASQ_E_INVALID);
    static masq_entry many[1001];
    for (int i = 0; i < 1001; i++) { many[i].key = B("k"); many[i].key_len = 1; many[i].value = B("v"); many[i].value_len = 1; }
    CHECK_RC(masq_set_all(s, "app", many, 1001, 0), MASQ_E_TOO_LARGE);

    masq_entry only[2] = {{B("a"), 1, B("1"), 1}, {B("b"), 1, B("2"), 1}};
    CHECK_RC(masq_set_all(s, "app", only, 2, MASQ_SET_ALL_REPLACE), MASQ_OK);
    CHECK_RC(masq_get_all(s, "app", &all, &count), MASQ_OK);
    CHECK(count == 2);
    masq_free(all);

    /* NULL store handles are errors for every call that takes one */
    CHECK_RC(masq_set_all(NULL, "app", only, 2, 0), MASQ_E_INVALID);
    CHECK_RC(masq_get_all(NULL, "app", &all, &count), MASQ_E_INVALID);
    CHECK_RC(masq_clear(NULL, "app"), MASQ_E_INVALID);
    CHECK_RC(masq_list(NULL, "app", NULL, 0, 0, on_entry, &st), MASQ_E_INVALID);
    CHECK_RC(masq_watch(NULL, "app", NULL, 0, NULL, NULL, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_unwatch(NULL, 1), MASQ_E_INVALID);

    /* get_all refuses more than max_batch_entries keys (list them instead) */
    CHECK_RC(masq_set_all(s, "big", many, 1000, 0), MASQ_OK); /* 1000 times the same key: one key */
    masq_entry distinct[1000];
    char distinct_keys[1000][8];
    for (int i = 0; i < 1000; i++) {
        snprintf(distinct_keys[i], sizeof distinct_keys[i], "k%04d", i);
        distinct[i] = (masq_entry){B(distinct_keys[i]), strlen(distinct_keys[i]), B("v"), 1};
    }
    CHECK_RC(masq_set_all(s, "big", distinct, 1000, 0), MASQ_OK);
    CHECK_RC(masq_put(s, "big", B("one-more"), 8, B("v"), 1), MASQ_OK);
    CHECK_RC(masq_get_all(s, "big", &all, &count), MASQ_E_TOO_LARGE);
    CHECK(all == NULL && count == 0);
    CHECK(strstr(masq_last_error(), "max_batch_entries") != NULL);

    /* namespaces and clear */
    CHECK_RC(masq_clear(s, "copy"), MASQ_OK);
    CHECK_RC(masq_clear(s, "never-used"), MASQ_OK);
    CHECK_RC(masq_clear(s, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_get_all(s, "copy", &all, &count), MASQ_OK);
    CHECK(count == 0);
    CHECK_RC(masq_close(s), MASQ_OK);
}

typedef struct { char names[8][32]; int count; int stop; } ns_state;

static int on_namespace(void *ctx, const char *ns) {
    ns_state *st = ctx;
    if (st->count < 8) snprintf(st->names[st->count], 32, "%s", ns);
    st->count++;
    return st->stop;
}

static void test_namespaces(void) {
    masq_store *s = open_store(NULL);
    CHECK_RC(masq_put(s, "zeta", B("k"), 1, B("v"), 1), MASQ_OK);
    CHECK_RC(masq_put(s, "alpha", B("k"), 1, B("v"), 1), MASQ_OK);
    CHECK_RC(masq_put(s, "gone", B("k"), 1, B("v"), 1), MASQ_OK);
    CHECK_RC(masq_delete(s, "gone", B("k"), 1), MASQ_OK);
    ns_state st = {0};
    CHECK_RC(masq_list_namespaces(s, on_namespace, &st), MASQ_OK);
    CHECK(st.count == 2 && strcmp(st.names[0], "alpha") == 0 && strcmp(st.names[1], "zeta") == 0);
    memset(&st, 0, sizeof st);
    st.stop = 1;
    CHECK_RC(masq_list_namespaces(s, on_namespace, &st), MASQ_OK);
    CHECK(st.count == 1);
    CHECK_RC(masq_list_namespaces(s, NULL, &st), MASQ_E_INVALID);
    CHECK_RC(masq_list_namespaces(NULL, on_namespace, &st), MASQ_E_INVALID);
    CHECK_RC(masq_close(s), MASQ_OK);
}

/* ---- counters and sync (without a transport) ---------------------------- */

static void on_progress(void *ctx, const char *device, uint64_t received, uint64_t remaining) {
    (void)ctx; (void)device; (void)received; (void)remaining;
}

static void test_counters_and_sync_api(void) {
    masq_store *s = open_store(NULL);
    int64_t v = -1;
    CHECK_RC(masq_counter_get(s, "app", B("likes"), 5, &v), MASQ_OK);
    CHECK(v == 0);
    CHECK_RC(masq_counter_add(s, "app", B("likes"), 5, 40), MASQ_OK);
    CHECK_RC(masq_counter_add(s, "app", B("likes"), 5, 3), MASQ_OK);
    CHECK_RC(masq_counter_add(s, "app", B("likes"), 5, -1), MASQ_OK);
    CHECK_RC(masq_counter_get(s, "app", B("likes"), 5, &v), MASQ_OK);
    CHECK(v == 42);
    CHECK(expect_value(s, "app", "likes", "42"));             /* get shows the total */
    CHECK_RC(masq_put(s, "app", B("likes"), 5, B("x"), 1), MASQ_E_INVALID);
    CHECK_RC(masq_put(s, "app", B("plain"), 5, B("x"), 1), MASQ_OK);
    CHECK_RC(masq_counter_add(s, "app", B("plain"), 5, 1), MASQ_E_INVALID);
    CHECK_RC(masq_counter_get(s, "app", B("plain"), 5, &v), MASQ_E_INVALID);
    CHECK_RC(masq_delete(s, "app", B("likes"), 5), MASQ_OK);  /* resets */
    CHECK_RC(masq_counter_get(s, "app", B("likes"), 5, &v), MASQ_OK);
    CHECK(v == 0);
    CHECK_RC(masq_counter_get(s, "app", B("likes"), 5, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_counter_add(NULL, "app", B("likes"), 5, 1), MASQ_E_INVALID);
    CHECK_RC(masq_counter_add(s, "app", NULL, 0, 1), MASQ_E_INVALID);

    CHECK_RC(masq_sync_start(s), MASQ_E_CONFIG);               /* no transport configured */
    CHECK(strstr(masq_last_error(), "transport") != NULL);
    CHECK_RC(masq_sync_once(s, 1), MASQ_E_CONFIG);
    CHECK_RC(masq_sync_once(s, -1), MASQ_E_INVALID);
    CHECK_RC(masq_sync_stop(s), MASQ_OK);
    CHECK_RC(masq_sync_set_progress(s, on_progress, NULL), MASQ_OK);
    CHECK_RC(masq_sync_set_progress(s, NULL, NULL), MASQ_OK);
    char *json = NULL;
    CHECK_RC(masq_sync_status(s, &json), MASQ_OK);
    CHECK(json && strstr(json, "\"running\": false") && strstr(json, "\"devices\": []"));
    masq_free(json);
    CHECK_RC(masq_sync_status(s, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_close(s), MASQ_OK);
}

/* ---- watch --------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t lock;
    int count;
    int kinds[16];
    char keys[16][16];
    int origin_ok;
    int other_thread;
    pthread_t caller;
    masq_store *store;
    int close_status;
} watch_state;

static void on_change(void *ctx, const masq_change *c) {
    watch_state *st = ctx;
    pthread_mutex_lock(&st->lock);
    if (st->count < 16) {
        st->kinds[st->count] = c->kind;
        snprintf(st->keys[st->count], 16, "%.*s", (int)c->key_len, (const char *)c->key);
    }
    st->count++;
    if (c->origin != MASQ_ORIGIN_LOCAL || c->struct_size < sizeof(masq_change) || c->timestamp == 0 || strcmp(c->ns, "app") != 0)
        st->origin_ok = 0;
    if ((c->kind == MASQ_CHANGE_DELETE) != (c->value == NULL)) st->origin_ok = 0;
    if (pthread_equal(pthread_self(), st->caller)) st->other_thread = 0;
    pthread_mutex_unlock(&st->lock);
    if (st->store) st->close_status = masq_close(st->store); /* not allowed from here */
}

static int wait_for(watch_state *st, int n) {
    for (int i = 0; i < 10000; i++) {
        pthread_mutex_lock(&st->lock);
        int c = st->count;
        pthread_mutex_unlock(&st->lock);
        if (c >= n) return 1;
        usleep(1000);
    }
    return 0;
}

static void test_watch(void) {
    masq_store *s = open_store(NULL);
    watch_state st = {PTHREAD_MUTEX_INITIALIZER, 0, {0}, {{0}}, 1, 1, pthread_self(), NULL, -1};
    uint64_t id = 0, other = 0;
    CHECK_RC(masq_watch(s, "app", NULL, 0, on_change, &st, &id), MASQ_OK);
    CHECK(id != 0);
    CHECK_RC(masq_put(s, "app", B("a"), 1, B("1"), 1), MASQ_OK);
    CHECK_RC(masq_put(s, "elsewhere", B("x"), 1, B("1"), 1), MASQ_OK);
    CHECK_RC(masq_put(s, "app", B("b"), 1, NULL, 0), MASQ_OK);
    CHECK_RC(masq_delete(s, "app", B("a"), 1), MASQ_OK);
    CHECK(wait_for(&st, 3));
    CHECK_RC(masq_unwatch(s, id), MASQ_OK);
    CHECK_RC(masq_put(s, "app", B("c"), 1, B("1"), 1), MASQ_OK);
    usleep(20000);
    CHECK(st.count == 3);
    CHECK(st.kinds[0] == MASQ_CHANGE_PUT && st.kinds[1] == MASQ_CHANGE_PUT && st.kinds[2] == MASQ_CHANGE_DELETE);
    CHECK(strcmp(st.keys[0], "a") == 0 && strcmp(st.keys[1], "b") == 0 && strcmp(st.keys[2], "a") == 0);
    CHECK(st.origin_ok);
    CHECK(st.other_thread);
    CHECK_RC(masq_unwatch(s, id), MASQ_E_NOT_FOUND);
    CHECK_RC(masq_watch(s, "app", NULL, 0, NULL, &st, &id), MASQ_E_INVALID);
    CHECK_RC(masq_watch(s, "app", NULL, 0, on_change, &st, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_watch(s, "\xff", NULL, 0, on_change, &st, &id), MASQ_E_INVALID);

    /* A prefix watch on every namespace; closing from the callback is refused. */
    watch_state st2 = {PTHREAD_MUTEX_INITIALIZER, 0, {0}, {{0}}, 1, 1, pthread_self(), s, -1};
    CHECK_RC(masq_watch(s, NULL, B("p"), 1, on_change, &st2, &other), MASQ_OK);
    CHECK_RC(masq_put(s, "app", B("q"), 1, B("1"), 1), MASQ_OK);
    CHECK_RC(masq_put(s, "app", B("p1"), 2, B("1"), 1), MASQ_OK);
    CHECK(wait_for(&st2, 1));
    usleep(20000);
    CHECK(st2.count == 1 && strcmp(st2.keys[0], "p1") == 0);
    CHECK(st2.close_status == MASQ_E_BUSY);
    CHECK_RC(masq_close(s), MASQ_OK);
}

/* ---- logging ------------------------------------------------------------- */

static int log_lines = 0;
static int log_component_ok = 1;

static void on_log(void *ctx, int level, const char *component, const char *message) {
    (void)ctx;
    log_lines++;
    if (level < MASQ_LOG_ERROR || level > MASQ_LOG_DEBUG || component == NULL || message == NULL) log_component_ok = 0;
}

static void test_logging(void) {
    CHECK_RC(masq_set_log_callback(7, on_log, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_set_log_callback(MASQ_LOG_DEBUG, on_log, NULL), MASQ_OK);
    masq_store *s = open_store(NULL);
    CHECK_RC(masq_close(s), MASQ_OK);
    CHECK(log_lines > 0);
    CHECK(log_component_ok);
    CHECK_RC(masq_set_log_callback(MASQ_LOG_ERROR, NULL, NULL), MASQ_OK);
    int before = log_lines;
    s = open_store(NULL);
    CHECK_RC(masq_close(s), MASQ_OK);
    CHECK(log_lines == before);
}

/* ---- plugins ------------------------------------------------------------- */

typedef struct { int ok_storage; int abi_refused; int total; int stop; } scan_state;

static int on_plugin(void *ctx, const masq_plugin_info *info) {
    scan_state *st = ctx;
    st->total++;
    if (info->struct_size < sizeof(masq_plugin_info) || info->path == NULL || info->message == NULL) return 1;
    if (info->status == MASQ_OK && info->kind == MASQ_PLUGIN_KIND_STORAGE && info->name && strcmp(info->name, plugin) == 0 &&
        info->abi_version == 1 && info->version != NULL)
        st->ok_storage++;
    if (info->status == MASQ_E_ABI && strstr(info->message, "ABI 99") && info->abi_version == 99) st->abi_refused++;
    return st->stop;
}

static void test_plugins_scan(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/scan.json", data_dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"plugin_path\": [\"%s\"]}", bad_dir);
    fclose(f);
    scan_state st = {0};
    CHECK_RC(masq_plugins_scan(path, on_plugin, &st), MASQ_OK);
    CHECK(st.ok_storage >= 1);
    CHECK(st.abi_refused == 1);
    CHECK(st.total >= 10);
    memset(&st, 0, sizeof st);
    st.stop = 1;
    CHECK_RC(masq_plugins_scan(NULL, on_plugin, &st), MASQ_OK);
    CHECK(st.total == 1);
    CHECK_RC(masq_plugins_scan(NULL, NULL, NULL), MASQ_E_INVALID);
    CHECK_RC(masq_plugins_scan("/nonexistent.json", on_plugin, &st), MASQ_E_CONFIG);
}

/* ---- threads ------------------------------------------------------------- */

typedef struct { masq_store *store; int id; int errors; int error_isolated; } worker;

static void *write_many(void *arg) {
    worker *w = arg;
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "t%d-%d", w->id, i);
        if (masq_put(w->store, "threads", B(key), strlen(key), B("v"), 1) != MASQ_OK) w->errors++;
    }
    /* Errors are per thread: a failure here is invisible to the others. */
    masq_put(w->store, "threads", NULL, 1, NULL, 0);
    w->error_isolated = masq_last_error_code() == MASQ_E_INVALID;
    return NULL;
}

static void test_threads(void) {
    masq_store *s = open_store(NULL);
    pthread_t threads[4];
    worker workers[4];
    for (int i = 0; i < 4; i++) {
        workers[i] = (worker){s, i, 0, 0};
        pthread_create(&threads[i], NULL, write_many, &workers[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
    CHECK(masq_last_error_code() == MASQ_OK || masq_last_error_code() != MASQ_E_INVALID);
    for (int i = 0; i < 4; i++) CHECK(workers[i].errors == 0 && workers[i].error_isolated);
    masq_entry *all;
    size_t count;
    CHECK_RC(masq_get_all(s, "threads", &all, &count), MASQ_OK);
    CHECK(count == 800);
    masq_free(all);
    CHECK_RC(masq_close(s), MASQ_OK);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <storage plugin> <bad plugin dir>\n", argv[0]);
        return 2;
    }
    plugin = argv[1];
    bad_dir = argv[2];
    fresh_data_dir();
    masq_set_log_callback(MASQ_LOG_ERROR, NULL, NULL);

    test_version_and_status();
    test_open_errors();
    test_bad_plugins();
    test_put_get_delete();
    fresh_data_dir();
    test_list_and_batches();
    fresh_data_dir();
    test_namespaces();
    fresh_data_dir();
    test_counters_and_sync_api();
    fresh_data_dir();
    test_watch();
    test_logging();
    test_plugins_scan();
    fresh_data_dir();
    test_threads();

    printf("api_test [%s]: %d checks, %d failures\n", plugin, checks, failures);
    remove_dirs();
    return failures == 0 ? 0 : 1;
}

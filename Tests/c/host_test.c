/*
 * host_test — every plugin in the tree against host tables of every length
 * the header has had: cut after the base members (peer_event), after
 * peer_up_info, whole, and longer than this header knows (a newer kernel).
 * A plugin must run on any table that offers the members it calls
 * (MASQ_HOST_HAS) and refuse a table that lacks one with a status, never a
 * crash.
 *
 * usage: host_test DIR...   (directories holding libmasq_*.so plugins)
 */
#define _DEFAULT_SOURCE
#include "masq_plugin.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static void h_log(const masq_host *h, int level, const char *m) { (void)h; (void)level; (void)m; }
static int h_error(const masq_host *h, int status, const char *m) { (void)h; (void)m; return status; }
static uint64_t h_now(const masq_host *h) { (void)h; return 1700000000000ULL; }
static uint64_t h_mono(const masq_host *h) { (void)h; return 1; }
static int h_random(const masq_host *h, uint8_t *buf, size_t len) {
    (void)h;
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)rand();
    return MASQ_OK;
}
static void h_frame(const masq_host *h, const char *p, const char *r, const uint8_t *f, size_t n) {
    (void)h; (void)p; (void)r; (void)f; (void)n;
}
static void h_event(const masq_host *h, const char *p, int e) { (void)h; (void)p; (void)e; }
static void h_info(const masq_host *h, const char *p, const char *j) { (void)h; (void)p; (void)j; }
static int h_answer(const masq_host *h, const char *m, const uint8_t *q, size_t n, masq_bytes_sink s, void *c) {
    (void)h; (void)m; (void)q; (void)n; (void)s; (void)c;
    return MASQ_E_NOT_FOUND;
}

/* A host table with struct_size `size`, in a buffer `extra` bytes longer than
 * this header's struct (the tail zero, as a newer kernel's unknown members). */
static masq_host *host_of(size_t size, size_t extra) {
    masq_host *h = calloc(1, sizeof(masq_host) + extra);
    h->struct_size = (uint32_t)size;
    h->abi_version = MASQ_PLUGIN_ABI_VERSION;
    h->log = h_log;
    h->error = h_error;
    h->now_unix_ms = h_now;
    h->monotonic_ns = h_mono;
    h->random_bytes = h_random;
    h->frame_received = h_frame;
    h->peer_event = h_event;
    if (size >= offsetof(masq_host, peer_up_info) + sizeof h->peer_up_info) h->peer_up_info = h_info;
    if (size >= offsetof(masq_host, answer_challenge) + sizeof h->answer_challenge) h->answer_challenge = h_answer;
    return h;
}

#define END(member) (offsetof(masq_host, member) + sizeof(((masq_host *)0)->member))

/* Plugins, and whether creating one also needs options (the mesh needs
 * seeds: without them it answers MASQ_E_CONFIG, after checking the host).
 * The Connectoid transport needs answer_challenge only to receive: it
 * refuses join, not create, without it. */
static const struct { const char *file; int needs_options; } plugins[] = {
    {"libmasq_storage_sqlite.so", 0},   {"libmasq_storage_memory.so", 0},  {"libmasq_transport_relay.so", 0},
    {"libmasq_transport_localws.so", 0}, {"libmasq_transport_mesh.so", 1},  {"libmasq_transport_lan.so", 0},
    {"libmasq_transport_connectoid.so", 0},
};

static void *find(int dirs, char **dir, const char *file) {
    char path[1024];
    for (int i = 0; i < dirs; i++) {
        snprintf(path, sizeof path, "%s/%s", dir[i], file);
        if (access(path, R_OK) == 0) return dlopen(path, RTLD_NOW | RTLD_LOCAL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    char data[] = "/tmp/masq-hosttest-XXXXXX";
    if (!mkdtemp(data)) return 2;
    masq_plugin_option storage_options[] = {{"data_dir", data}};
    const size_t base = END(peer_event);
    const struct { size_t size; size_t extra; } tables[] = {
        {base, 0}, {END(peer_up_info), 0}, {sizeof(masq_host), 0}, {sizeof(masq_host) + 64, 64},
    };
    int loaded = 0;
    for (size_t p = 0; p < sizeof plugins / sizeof plugins[0]; p++) {
        void *so = find(argc - 1, argv + 1, plugins[p].file);
        if (!so) {
            printf("host_test: %s not found, skipped\n", plugins[p].file);
            continue;
        }
        loaded++;
        masq_plugin_entry_fn entry = (masq_plugin_entry_fn)(uintptr_t)dlsym(so, MASQ_PLUGIN_ENTRY_SYMBOL);
        CHECK(entry != NULL);
        const masq_plugin_descriptor *d = entry();
        for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
            masq_host *h = host_of(tables[t].size, tables[t].extra);
            int rc;
            if (d->kind == MASQ_PLUGIN_STORAGE) {
                const masq_storage_vtable *v = d->vtable;
                void *db = NULL;
                rc = v->open(h, storage_options, 1, &db);
                if (rc == MASQ_OK) v->close(db);
            } else {
                const masq_transport_vtable *v = d->vtable;
                void *tr = NULL;
                rc = v->create(h, NULL, 0, &tr);
                if (rc == MASQ_OK) v->destroy(tr);
            }
            /* Accepted: created, or (mesh without seeds) refused for its options only. */
            int accepted = plugins[p].needs_options ? rc == MASQ_E_CONFIG : rc == MASQ_OK;
            if (!accepted) printf("host_test: %s with a host table of %zu bytes: status %d\n", plugins[p].file, tables[t].size, rc);
            CHECK(accepted);
            free(h);
        }
        /* A table shorter than the base members is refused by every plugin. */
        masq_host *tiny = host_of(END(monotonic_ns), 0);
        int rc;
        if (d->kind == MASQ_PLUGIN_STORAGE) {
            void *db = NULL;
            rc = ((const masq_storage_vtable *)d->vtable)->open(tiny, storage_options, 1, &db);
            if (rc == MASQ_OK) ((const masq_storage_vtable *)d->vtable)->close(db);
        } else {
            void *tr = NULL;
            rc = ((const masq_transport_vtable *)d->vtable)->create(tiny, NULL, 0, &tr);
            if (rc == MASQ_OK) ((const masq_transport_vtable *)d->vtable)->destroy(tr);
        }
        if (rc != MASQ_E_ABI) printf("host_test: %s answered %d to a host table without random_bytes/frame_received\n", plugins[p].file, rc);
        CHECK(rc == MASQ_E_ABI);
        free(tiny);
    }
    CHECK(loaded >= 5);
    char cleanup[64];
    snprintf(cleanup, sizeof cleanup, "rm -rf %s", data);
    if (system(cleanup) != 0) return 2;
    printf("host_test: %d plugins, %d checks, %d failures\n", loaded, checks, failures);
    return failures == 0 ? 0 : 1;
}

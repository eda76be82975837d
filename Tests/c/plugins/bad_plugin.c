/*
 * Deliberately broken plugins, one per loader error. Build one variant with
 *   cc -shared -fPIC -DVARIANT_<NAME> -DPLUGIN_NAME='"<name>"' bad_plugin.c
 * The kernel must refuse each with a clear message and never call into it.
 */
#include "masq_plugin.h"
#include <stdlib.h>

#ifndef PLUGIN_NAME
#define PLUGIN_NAME "bad"
#endif

static int st_open(const masq_host *h, const masq_plugin_option *o, size_t n, void **out) {
    (void)h; (void)o; (void)n; (void)out;
    abort(); /* the kernel must never get this far with a broken plugin */
}
static void st_close(void *db) { (void)db; }
static int st_begin(void *db) { (void)db; return MASQ_E_UNSUPPORTED; }
__attribute__((unused)) static int st_get(void *db, const uint8_t *k, size_t kl, masq_bytes_sink s, void *c) {
    (void)db; (void)k; (void)kl; (void)s; (void)c; return MASQ_E_UNSUPPORTED;
}
static int st_put(void *db, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl) {
    (void)db; (void)k; (void)kl; (void)v; (void)vl; return MASQ_E_UNSUPPORTED;
}
static int st_del(void *db, const uint8_t *k, size_t kl) { (void)db; (void)k; (void)kl; return MASQ_E_UNSUPPORTED; }
static int st_scan(void *db, const uint8_t *s, size_t sl, const uint8_t *e, size_t el, uint32_t f, masq_scan_visitor v, void *c) {
    (void)db; (void)s; (void)sl; (void)e; (void)el; (void)f; (void)v; (void)c; return MASQ_E_UNSUPPORTED;
}

__attribute__((unused)) static masq_storage_vtable storage_vtable = {
    sizeof(masq_storage_vtable), 0, st_open, st_close, st_begin, st_begin, st_begin,
#ifdef VARIANT_NULL_MEMBER
    NULL,
#else
    st_get,
#endif
    st_put, st_del, st_scan, NULL, NULL,
};

static int tr_create(const masq_host *h, const masq_plugin_option *o, size_t n, void **out) {
    (void)h; (void)o; (void)n; (void)out; abort();
}
static void tr_destroy(void *t) { (void)t; }
static int tr_start(void *t) { (void)t; return MASQ_E_UNSUPPORTED; }
static int tr_send(void *t, const char *d, const uint8_t *f, size_t l) { (void)t; (void)d; (void)f; (void)l; return MASQ_E_UNSUPPORTED; }

__attribute__((unused)) static masq_transport_vtable transport_vtable = {
    sizeof(masq_transport_vtable), 0, tr_create, tr_destroy, tr_start, tr_start,
    NULL, NULL, NULL, NULL, tr_send, NULL, NULL, NULL,
};

__attribute__((unused)) static masq_plugin_descriptor descriptor = {
    sizeof(masq_plugin_descriptor),
#ifdef VARIANT_ABI
    MASQ_PLUGIN_ABI_VERSION + 98,
#else
    MASQ_PLUGIN_ABI_VERSION,
#endif
#ifdef VARIANT_KIND
    MASQ_PLUGIN_TRANSPORT,
#else
    MASQ_PLUGIN_STORAGE,
#endif
    0,
    PLUGIN_NAME,
    "0.0.1",
    "a deliberately broken plugin",
#if defined(VARIANT_NULL_VTABLE)
    NULL,
#elif defined(VARIANT_KIND)
    &transport_vtable,
#else
    &storage_vtable,
#endif
};

#ifdef VARIANT_NO_ENTRY
MASQ_PLUGIN_EXPORT int not_a_masq_plugin(void) { return 42; }
#else
MASQ_PLUGIN_EXPORT const masq_plugin_descriptor *masq_plugin_entry(void) {
#if defined(VARIANT_NULL_DESCRIPTOR)
    return NULL;
#else
#ifdef VARIANT_SHORT_VTABLE
    storage_vtable.struct_size = 16;
#endif
    return &descriptor;
#endif
}
#endif

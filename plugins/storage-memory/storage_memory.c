/*
 * storage-memory — an in-memory Masq storage plugin, in plain C11, written
 * against include/masq_plugin.h alone. It is the reference for third-party
 * plugin authors: every rule of the storage contract shows up here once.
 *
 * Data structure: a skip list (ordered, O(log n) expected per operation).
 * Transactions: an undo log records each key's prior state on its first
 * write in the transaction; rollback replays it backwards.
 * Options: "max_bytes" caps the bytes of keys + values held (0: no cap).
 * Data lives as long as the handle: close() frees everything.
 */
#include "masq_plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LEVEL 32

typedef struct node {
    uint8_t *key;
    size_t key_len;
    uint8_t *value;
    size_t value_len;
    int level;
    struct node *next[]; /* `level` forward pointers */
} node;

/* The state of one key before the transaction first touched it. */
typedef struct undo_record {
    uint8_t *key;
    size_t key_len;
    uint8_t *value; /* NULL when the key was absent */
    size_t value_len;
    int existed;
} undo_record;

typedef struct memory_db {
    const masq_host *host;
    node *head; /* sentinel with MAX_LEVEL pointers */
    int level;  /* highest level in use */
    uint64_t rng;
    size_t bytes;     /* bytes of keys + values held */
    size_t max_bytes; /* 0: unlimited */
    int in_transaction;
    undo_record *undo;
    size_t undo_len;
    size_t undo_cap;
} memory_db;

/* ---- helpers ------------------------------------------------------------ */

static int fail(memory_db *db, int status, const char *message) {
    return db->host->error(db->host, status, message);
}

/* Bytewise order, shorter first on a common prefix (the contract's order). */
static int compare(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0) return c;
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

static uint8_t *copy_bytes(const uint8_t *src, size_t len) {
    uint8_t *p = malloc(len ? len : 1);
    if (p && len) memcpy(p, src, len);
    return p;
}

static int random_level(memory_db *db) {
    /* xorshift64*; each level kept with probability 1/4 */
    int level = 1;
    for (;;) {
        db->rng ^= db->rng >> 12;
        db->rng ^= db->rng << 25;
        db->rng ^= db->rng >> 27;
        uint64_t r = db->rng * 2685821657736338717ULL;
        for (int i = 0; i < 32; i++, r >>= 2) {
            if ((r & 3) != 0 || level == MAX_LEVEL) return level;
            level++;
        }
    }
}

/* Fill update[i] with the last node at level i whose key is < key; return
 * the first node whose key is >= key (or NULL). */
static node *seek(memory_db *db, const uint8_t *key, size_t key_len, node **update) {
    node *x = db->head;
    for (int i = db->level - 1; i >= 0; i--) {
        while (x->next[i] && compare(x->next[i]->key, x->next[i]->key_len, key, key_len) < 0) x = x->next[i];
        if (update) update[i] = x;
    }
    return x->next[0];
}

static node *find(memory_db *db, const uint8_t *key, size_t key_len) {
    node *x = seek(db, key, key_len, NULL);
    return (x && compare(x->key, x->key_len, key, key_len) == 0) ? x : NULL;
}

static void free_node(node *n) {
    free(n->key);
    free(n->value);
    free(n);
}

/* Set key to a copy of value (value NULL: remove). No undo bookkeeping. */
static int apply(memory_db *db, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len, int remove) {
    node *update[MAX_LEVEL];
    node *x = seek(db, key, key_len, update);
    int exists = x && compare(x->key, x->key_len, key, key_len) == 0;

    if (remove) {
        if (!exists) return MASQ_OK;
        for (int i = 0; i < x->level; i++) update[i]->next[i] = x->next[i];
        while (db->level > 1 && db->head->next[db->level - 1] == NULL) db->level--;
        db->bytes -= x->key_len + x->value_len;
        free_node(x);
        return MASQ_OK;
    }

    size_t old_bytes = exists ? x->key_len + x->value_len : 0;
    if (db->max_bytes && db->bytes - old_bytes + key_len + value_len > db->max_bytes)
        return fail(db, MASQ_E_IO, "memory store is full (option max_bytes)");

    uint8_t *copy = copy_bytes(value, value_len);
    if (!copy) return fail(db, MASQ_E_NOMEM, "out of memory");
    if (exists) {
        free(x->value);
        x->value = copy;
        db->bytes = db->bytes - x->value_len + value_len;
        x->value_len = value_len;
        return MASQ_OK;
    }

    int level = random_level(db);
    node *n = malloc(sizeof(node) + (size_t)level * sizeof(node *));
    uint8_t *key_copy = n ? copy_bytes(key, key_len) : NULL;
    if (!n || !key_copy) {
        free(n);
        free(copy);
        return fail(db, MASQ_E_NOMEM, "out of memory");
    }
    n->key = key_copy;
    n->key_len = key_len;
    n->value = copy;
    n->value_len = value_len;
    n->level = level;
    if (level > db->level) {
        for (int i = db->level; i < level; i++) update[i] = db->head;
        db->level = level;
    }
    for (int i = 0; i < level; i++) {
        n->next[i] = update[i]->next[i];
        update[i]->next[i] = n;
    }
    db->bytes += key_len + value_len;
    return MASQ_OK;
}

/* Remember the key's current state so rollback can restore it. Recording a
 * key twice is harmless: rollback replays backwards, the first record wins. */
static int remember(memory_db *db, const uint8_t *key, size_t key_len) {
    if (db->undo_len == db->undo_cap) {
        size_t cap = db->undo_cap ? db->undo_cap * 2 : 64;
        undo_record *grown = realloc(db->undo, cap * sizeof(undo_record));
        if (!grown) return fail(db, MASQ_E_NOMEM, "out of memory");
        db->undo = grown;
        db->undo_cap = cap;
    }
    undo_record *u = &db->undo[db->undo_len];
    node *x = find(db, key, key_len);
    u->key = copy_bytes(key, key_len);
    u->key_len = key_len;
    u->existed = x != NULL;
    u->value = x ? copy_bytes(x->value, x->value_len) : NULL;
    u->value_len = x ? x->value_len : 0;
    if (!u->key || (x && !u->value)) {
        free(u->key);
        free(u->value);
        return fail(db, MASQ_E_NOMEM, "out of memory");
    }
    db->undo_len++;
    return MASQ_OK;
}

static void forget_undo(memory_db *db) {
    for (size_t i = 0; i < db->undo_len; i++) {
        free(db->undo[i].key);
        free(db->undo[i].value);
    }
    db->undo_len = 0;
}

/* ---- the vtable --------------------------------------------------------- */

static int mem_open(const masq_host *host, const masq_plugin_option *options, size_t option_count, void **db_out) {
    if (host == NULL || db_out == NULL) return MASQ_E_INVALID;
    /* Every host function called below must be offered (see MASQ_HOST_HAS). */
    if (!MASQ_HOST_HAS(host, error) || !MASQ_HOST_HAS(host, random_bytes)) return MASQ_E_ABI;
    memory_db *db = calloc(1, sizeof(memory_db));
    if (!db) return host->error(host, MASQ_E_NOMEM, "out of memory");
    db->host = host;

    for (size_t i = 0; i < option_count; i++) {
        const char *key = options[i].key, *value = options[i].value;
        if (strcmp(key, "data_dir") == 0) continue; /* memory needs no directory */
        if (strcmp(key, "max_bytes") == 0) {
            char *end = NULL;
            unsigned long long v = strtoull(value, &end, 10);
            if (*value == '\0' || *value == '-' || *end != '\0') {
                free(db);
                return host->error(host, MASQ_E_CONFIG, "option max_bytes must be a non-negative integer");
            }
            db->max_bytes = (size_t)v;
            continue;
        }
        char message[256];
        snprintf(message, sizeof message, "unknown option \"%.100s\" (known: max_bytes)", key);
        free(db);
        return host->error(host, MASQ_E_CONFIG, message);
    }

    db->head = calloc(1, sizeof(node) + MAX_LEVEL * sizeof(node *));
    if (!db->head) {
        free(db);
        return host->error(host, MASQ_E_NOMEM, "out of memory");
    }
    db->head->level = MAX_LEVEL;
    db->level = 1;
    if (host->random_bytes(host, (uint8_t *)&db->rng, sizeof db->rng) != MASQ_OK || db->rng == 0) db->rng = 0x9E3779B97F4A7C15ULL;
    *db_out = db;
    return MASQ_OK;
}

static void mem_close(void *handle) {
    memory_db *db = handle;
    if (!db) return;
    forget_undo(db);
    free(db->undo);
    node *x = db->head->next[0];
    while (x) {
        node *next = x->next[0];
        free_node(x);
        x = next;
    }
    free(db->head);
    free(db);
}

static int mem_begin(void *handle) {
    memory_db *db = handle;
    if (db->in_transaction) return fail(db, MASQ_E_INVALID, "begin: a transaction is already open");
    db->in_transaction = 1;
    return MASQ_OK;
}

static int mem_commit(void *handle) {
    memory_db *db = handle;
    if (!db->in_transaction) return fail(db, MASQ_E_INVALID, "commit: no transaction is open");
    forget_undo(db);
    db->in_transaction = 0;
    return MASQ_OK;
}

static int mem_rollback(void *handle) {
    memory_db *db = handle;
    if (!db->in_transaction) return MASQ_OK;
    for (size_t i = db->undo_len; i > 0; i--) {
        undo_record *u = &db->undo[i - 1];
        /* Restoring never needs more memory than the state it replaces had,
         * except for re-inserting a removed node; max_bytes is not checked
         * then because the bytes were accounted for before the transaction. */
        size_t saved = db->max_bytes;
        db->max_bytes = 0;
        apply(db, u->key, u->key_len, u->value, u->value_len, !u->existed);
        db->max_bytes = saved;
    }
    forget_undo(db);
    db->in_transaction = 0;
    return MASQ_OK;
}

static int mem_get(void *handle, const uint8_t *key, size_t key_len, masq_bytes_sink sink, void *sink_ctx) {
    memory_db *db = handle;
    if (key == NULL && key_len) return fail(db, MASQ_E_INVALID, "get: key is NULL");
    node *x = find(db, key, key_len);
    if (!x) return MASQ_E_NOT_FOUND;
    return sink(sink_ctx, x->value, x->value_len);
}

static int mem_put(void *handle, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len) {
    memory_db *db = handle;
    if (!db->in_transaction) return fail(db, MASQ_E_INVALID, "put: writes need a transaction (begin)");
    if ((key == NULL && key_len) || (value == NULL && value_len)) return fail(db, MASQ_E_INVALID, "put: NULL pointer with a length");
    int rc = remember(db, key, key_len);
    return rc != MASQ_OK ? rc : apply(db, key, key_len, value, value_len, 0);
}

static int mem_del(void *handle, const uint8_t *key, size_t key_len) {
    memory_db *db = handle;
    if (!db->in_transaction) return fail(db, MASQ_E_INVALID, "del: writes need a transaction (begin)");
    if (key == NULL && key_len) return fail(db, MASQ_E_INVALID, "del: key is NULL");
    if (!find(db, key, key_len)) return MASQ_OK;
    int rc = remember(db, key, key_len);
    return rc != MASQ_OK ? rc : apply(db, key, key_len, NULL, 0, 1);
}

static int mem_scan(void *handle, const uint8_t *start, size_t start_len, const uint8_t *end, size_t end_len,
                    uint32_t flags, masq_scan_visitor visitor, void *visitor_ctx) {
    memory_db *db = handle;
    if (flags != 0) return fail(db, MASQ_E_INVALID, "scan: unknown flags");
    node *x = start ? seek(db, start, start_len, NULL) : db->head->next[0];
    for (; x; x = x->next[0]) {
        if (end && compare(x->key, x->key_len, end, end_len) >= 0) break;
        int rc = visitor(visitor_ctx, x->key, x->key_len, x->value, x->value_len);
        if (rc == MASQ_SCAN_STOP) return MASQ_OK;
        if (rc != MASQ_OK) return rc;
    }
    return MASQ_OK;
}

static const masq_storage_vtable memory_vtable = {
    sizeof(masq_storage_vtable),
    0, /* not persistent */
    mem_open,
    mem_close,
    mem_begin,
    mem_commit,
    mem_rollback,
    mem_get,
    mem_put,
    mem_del,
    mem_scan,
    NULL, /* delete_range is optional: the kernel falls back to scan + del */
    NULL, /* compact is optional: nothing lingers on a disk we do not have */
};

static const masq_plugin_descriptor memory_descriptor = {
    sizeof(masq_plugin_descriptor),
    MASQ_PLUGIN_ABI_VERSION,
    MASQ_PLUGIN_STORAGE,
    0,
    "memory",
    "1.0.0",
    "in-memory skip list (reference plugin in plain C; data ends with the process)",
    &memory_vtable,
};

MASQ_PLUGIN_EXPORT const masq_plugin_descriptor *masq_plugin_entry(void) {
    return &memory_descriptor;
}

/* The reference for bench/localws: the same small puts or gets through
 * masq.h in-process, on a store configured like a masqd profile (SQLite,
 * default config), with T threads (one per "app", each in its own
 * namespace), each timing every call. Prints requests/s and p50/p99.
 *
 *   inproc DATA_DIR put|get THREADS SECONDS [VALUE_BYTES]
 */
#include "../common/wsclient.h"
#include "masq.h"

#include <pthread.h>

static masq_store *store;
static const char *op;
static double seconds;
static int size;
static histogram latency;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t completed;

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    char ns[32], key[32];
    snprintf(ns, sizeof ns, "native:bench.%d", id);
    uint8_t value[512];
    memset(value, 'v', sizeof value);
    histogram *mine = calloc(1, sizeof *mine);
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9), n = 0;
    while (now_ns() < end) {
        int k = snprintf(key, sizeof key, "key-%04u", (unsigned)(n++ % 1000));
        uint64_t t0 = now_ns();
        if (op[0] == 'p') {
            if (masq_put(store, ns, (const uint8_t *)key, (size_t)k, value, (size_t)size) != MASQ_OK) die("masq_put");
        } else {
            uint8_t *v;
            size_t vl;
            int rc = masq_get(store, ns, (const uint8_t *)key, (size_t)k, &v, &vl);
            if (rc == MASQ_OK) masq_free(v);
            else if (rc != MASQ_E_NOT_FOUND) die("masq_get");
        }
        histogram_add(mine, now_ns() - t0);
    }
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i <= 1000000; i++) latency.bucket[i] += mine->bucket[i];
    latency.count += mine->count;
    completed += mine->count;
    pthread_mutex_unlock(&lock);
    free(mine);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: inproc DATA_DIR put|get THREADS SECONDS [VALUE_BYTES]\n");
        return 2;
    }
    op = argv[2];
    int threads = atoi(argv[3]);
    seconds = atof(argv[4]);
    size = argc > 5 ? atoi(argv[5]) : 100;
    char config[1024];
    snprintf(config, sizeof config, "{\"data_dir\": \"%s\"}", argv[1]);
    if (masq_open_config(config, NULL, &store) != MASQ_OK) {
        fprintf(stderr, "inproc: %s\n", masq_last_error());
        return 1;
    }
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    uint64_t start = now_ns();
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    double elapsed = (double)(now_ns() - start) / 1e9;
    printf("path=inproc op=%s apps=%d requests=%llu rate=%.0f p50_ms=%.3f p99_ms=%.3f errors=0\n", op, threads,
           (unsigned long long)completed, (double)completed / elapsed, histogram_ms(&latency, 0.5), histogram_ms(&latency, 0.99));
    masq_close(store);
    return 0;
}

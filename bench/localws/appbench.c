/* Apps against masqd: N approved native apps, each on its own WebSocket,
 * each with one request outstanding at a time (closed loop), doing small
 * puts or gets in its namespace for S seconds. Prints requests/s and
 * p50/p99 latency. Tokens come from a file of "app_id token" lines
 * (bench/localws/run.sh registers and approves the apps first).
 *
 *   appbench --port P --tokens FILE --apps N --op put|get [--seconds S] [--size B]
 */
#include "../common/wsclient.h"

#include <fcntl.h>
#include <sys/epoll.h>

typedef struct {
    int fd;
    int ready;     /* hello answered: approved */
    int busy;      /* a request is outstanding */
    int upgraded;
    uint64_t sent_at;
    uint64_t seq;
    buf in, out;
    char app_id[64];
    char token[128];
} app;

static histogram latency;
static uint64_t completed, errors;

static void request(app *a, const char *op, int size) {
    char msg[1024];
    int n;
    unsigned key = (unsigned)(a->seq++ % 1000);
    if (op[0] == 'p') {
        char value[600];
        memset(value, 'v', (size_t)size);
        value[size] = 0;
        n = snprintf(msg, sizeof msg, "{\"id\":%llu,\"op\":\"put\",\"key\":\"key-%04u\",\"value\":\"%s\"}",
                     (unsigned long long)a->seq, key, value);
    } else {
        n = snprintf(msg, sizeof msg, "{\"id\":%llu,\"op\":\"get\",\"key\":\"key-%04u\"}", (unsigned long long)a->seq, key);
    }
    ws_frame(&a->out, 1, msg, (size_t)n);
    a->busy = 1;
    a->sent_at = now_ns();
}

/* Handle every complete frame; returns 1 when an answer arrived. */
static int on_input(app *a) {
    int answered = 0, opcode;
    const uint8_t *p;
    size_t n, used;
    while ((used = ws_parse(&a->in, &opcode, &p, &n)) > 0) {
        if (opcode == 9) {
            ws_frame(&a->out, 10, p, n);
        } else if (opcode == 1 && !memmem(p, n, "\"event\"", 7)) {
            if (!a->ready) {
                if (!memmem(p, n, "\"approved\"", 10)) {
                    fprintf(stderr, "%s not approved: %.*s\n", a->app_id, (int)n, (const char *)p);
                    exit(1);
                }
                a->ready = 1;
            } else {
                if (!memmem(p, n, "\"ok\":true", 9)) {
                    if (errors++ < 3) fprintf(stderr, "error: %.*s\n", (int)(n > 200 ? 200 : n), (const char *)p);
                }
                histogram_add(&latency, now_ns() - a->sent_at);
                completed++;
                a->busy = 0;
                answered = 1;
            }
        } else if (opcode == 8) {
            fprintf(stderr, "masqd closed a connection\n");
            exit(1);
        }
        consume(&a->in, used);
    }
    return answered;
}

static void usage(void) {
    fprintf(stderr, "usage: appbench --port P --tokens FILE --apps N --op put|get [--seconds S] [--size B]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int port = 0, apps = 1, size = 100;
    double seconds = 5;
    const char *tokens = NULL, *op = "put";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) tokens = argv[i + 1];
        else if (!strcmp(argv[i], "--apps")) apps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--op")) op = argv[i + 1];
        else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else usage();
    }
    if (!port || !tokens || apps < 1 || size < 1 || size > 500 || (strcmp(op, "put") && strcmp(op, "get"))) usage();
    FILE *f = fopen(tokens, "r");
    if (!f) die(tokens);
    app *all = calloc((size_t)apps, sizeof *all);
    for (int i = 0; i < apps; i++) {
        if (fscanf(f, "%63s %127s", all[i].app_id, all[i].token) != 2) {
            fprintf(stderr, "%s holds fewer than %d apps\n", tokens, apps);
            return 2;
        }
    }
    fclose(f);

    int epfd = epoll_create1(0);
    for (int i = 0; i < apps; i++) {
        app *a = &all[i];
        a->fd = ws_connect(port, 0, NULL, &a->out);   /* blocking for the set-up */
        if (flush_buf(a->fd, &a->out) < 0) die("send");
        while (!a->upgraded) {
            reserve(&a->in, 4096);
            ssize_t n = recv(a->fd, a->in.data + a->in.len, a->in.cap - a->in.len, 0);
            if (n <= 0) die("recv");
            a->in.len += (size_t)n;
            int up = ws_upgraded(&a->in);
            if (up < 0) return 1;
            a->upgraded = up;
        }
        char hello[300];
        int n = snprintf(hello, sizeof hello, "{\"id\":0,\"op\":\"hello\",\"app_id\":\"%s\",\"token\":\"%s\"}",
                         a->app_id + 7 /* "native:" */, a->token);
        ws_frame(&a->out, 1, hello, (size_t)n);
        if (flush_buf(a->fd, &a->out) < 0) die("send");
        while (!a->ready) {
            reserve(&a->in, 4096);
            ssize_t got = recv(a->fd, a->in.data + a->in.len, a->in.cap - a->in.len, 0);
            if (got <= 0) die("recv");
            a->in.len += (size_t)got;
            on_input(a);
        }
        if (fcntl(a->fd, F_SETFL, O_NONBLOCK) < 0) die("fcntl");
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = a};
        epoll_ctl(epfd, EPOLL_CTL_ADD, a->fd, &ev);
    }

    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < apps; i++) {
        request(&all[i], op, size);
        flush_buf(all[i].fd, &all[i].out);
    }
    struct epoll_event evs[128];
    while (now_ns() < end) {
        int n = epoll_wait(epfd, evs, 128, 10);
        for (int k = 0; k < n; k++) {
            app *a = evs[k].data.ptr;
            for (;;) {
                reserve(&a->in, 65536);
                ssize_t got = recv(a->fd, a->in.data + a->in.len, a->in.cap - a->in.len, 0);
                if (got < 0 && (errno == EAGAIN || errno == EINTR)) break;
                if (got <= 0) {
                    fprintf(stderr, "masqd closed a connection\n");
                    return 1;
                }
                a->in.len += (size_t)got;
            }
            if (on_input(a) && now_ns() < end) request(a, op, size);
            flush_buf(a->fd, &a->out);
        }
    }
    double elapsed = (double)(now_ns() - start) / 1e9;
    printf("path=masqd op=%s apps=%d requests=%llu rate=%.0f p50_ms=%.3f p99_ms=%.3f errors=%llu\n", op, apps,
           (unsigned long long)completed, (double)completed / elapsed, histogram_ms(&latency, 0.5),
           histogram_ms(&latency, 0.99), (unsigned long long)errors);
    return errors ? 1 : 0;
}

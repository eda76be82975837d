/*
 * crash_test — an acknowledged write survives kill -9.
 *
 * A child process writes through masq.h (single puts and set_all batches)
 * and reports each acknowledged write on a pipe; the parent SIGKILLs it at a
 * random moment, reopens the store, and checks that every acknowledged write
 * is there with its value. Repeated for several rounds.
 *
 * usage: crash_test [rounds=6]   (MASQ_PLUGIN_PATH must reach the sqlite plugin)
 */
#define _POSIX_C_SOURCE 200809L
#include "masq.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void config_for(const char *dir, char *out, size_t size) {
    snprintf(out, size, "{\"data_dir\": \"%s\", \"storage\": {\"plugin\": \"sqlite\"}}", dir);
}

static void key_for(int i, char *out) { snprintf(out, 24, "key-%08d", i); }
static void value_for(int i, char *out) { snprintf(out, 48, "value-%d-%d", i, i * 7919); }

/* Child: write forever, acknowledging each committed write by its index. */
static void writer(const char *dir, int fd) {
    char config[512];
    config_for(dir, config, sizeof config);
    masq_store *s;
    if (masq_open_config(config, NULL, &s) != MASQ_OK) {
        fprintf(stderr, "writer: %s\n", masq_last_error());
        _exit(3);
    }
    char keys[16][24], values[16][48];
    for (int i = 0;;) {
        if (i % 50 < 40) { /* single puts */
            key_for(i, keys[0]);
            value_for(i, values[0]);
            if (masq_put(s, "crash", (const uint8_t *)keys[0], strlen(keys[0]), (const uint8_t *)values[0], strlen(values[0])) != MASQ_OK) _exit(4);
            int32_t ack = i++;
            if (write(fd, &ack, sizeof ack) != sizeof ack) _exit(5);
        } else { /* a batch of 10, acknowledged together after it commits */
            masq_entry batch[10];
            for (int j = 0; j < 10; j++) {
                key_for(i + j, keys[j]);
                value_for(i + j, values[j]);
                batch[j] = (masq_entry){(const uint8_t *)keys[j], strlen(keys[j]), (const uint8_t *)values[j], strlen(values[j])};
            }
            if (masq_set_all(s, "crash", batch, 10, 0) != MASQ_OK) _exit(6);
            for (int j = 0; j < 10; j++) {
                int32_t ack = i++;
                if (write(fd, &ack, sizeof ack) != sizeof ack) _exit(5);
            }
        }
    }
}

static int one_round(int round) {
    char dir[] = "/tmp/masq-crash-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    int fds[2];
    if (pipe(fds) != 0) return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        writer(dir, fds[1]);
    }
    close(fds[1]);

    /* Let it write for 100-400 ms, then kill it mid-flight. */
    struct timespec pause = {0, (100 + rand() % 300) * 1000000L};
    nanosleep(&pause, NULL);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        fprintf(stderr, "round %d: writer ended on its own (status %d) before the kill\n", round, status);
        return 1;
    }
    int32_t highest = -1, ack;
    int acknowledged = 0;
    while (read(fds[0], &ack, sizeof ack) == sizeof ack) {
        if (ack != highest + 1) {
            fprintf(stderr, "round %d: acks out of order\n", round);
            return 1;
        }
        highest = ack;
        acknowledged++;
    }
    close(fds[0]);

    char config[512];
    config_for(dir, config, sizeof config);
    masq_store *s;
    if (masq_open_config(config, NULL, &s) != MASQ_OK) {
        fprintf(stderr, "round %d: reopen failed: %s\n", round, masq_last_error());
        return 1;
    }
    int missing = 0;
    for (int i = 0; i <= highest; i++) {
        char key[24], value[48];
        key_for(i, key);
        value_for(i, value);
        uint8_t *v;
        size_t n;
        if (masq_get(s, "crash", (const uint8_t *)key, strlen(key), &v, &n) != MASQ_OK || n != strlen(value) || memcmp(v, value, n) != 0) {
            if (missing++ < 5) fprintf(stderr, "round %d: acknowledged %s is missing or wrong\n", round, key);
        }
        masq_free(v);
    }
    /* The store still works after recovery. */
    int writable = masq_put(s, "crash", (const uint8_t *)"after", 5, (const uint8_t *)"ok", 2) == MASQ_OK;
    masq_close(s);
    printf("crash_test round %d: %d acknowledged writes before SIGKILL, %d missing, store %s after reopen\n",
           round, acknowledged, missing, writable ? "writable" : "NOT writable");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    return missing == 0 && writable && acknowledged > 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 6;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    int failed = 0;
    for (int r = 1; r <= rounds; r++) failed += one_round(r);
    printf("crash_test: %d of %d rounds lost acknowledged writes\n", failed, rounds);
    return failed == 0 ? 0 : 1;
}

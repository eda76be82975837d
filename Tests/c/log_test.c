/*
 * log_test — the config's "log_level" sets the level of standard error's
 * lines; opening a store never replaces or changes the embedder's callback
 * (masq_set_log_callback) nor its level.
 *
 * usage: log_test     (MASQ_PLUGIN_PATH must reach the sqlite plugin)
 */
#define _DEFAULT_SOURCE
#include "masq.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static int opened_lines = 0;

static void on_line(void *ctx, int level, const char *component, const char *message) {
    (void)ctx;
    (void)level;
    (void)component;
    if (strstr(message, "opened store") != NULL) opened_lines++;
}

static void open_and_close(const char *dir, const char *level) {
    char config[512];
    if (level) {
        snprintf(config, sizeof config, "{\"data_dir\": \"%s\", \"log_level\": \"%s\"}", dir, level);
    } else {
        snprintf(config, sizeof config, "{\"data_dir\": \"%s\"}", dir);
    }
    masq_store *s = NULL;
    CHECK_RC(masq_open_config(config, NULL, &s), MASQ_OK);
    masq_close(s);
}

/* Lines standard error received so far holding "opened store". */
static int stderr_opened_lines(const char *path) {
    fflush(stderr);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "opened store")) n++;
    }
    fclose(f);
    return n;
}

int main(void) {
    unsetenv("MASQ_LOG");
    char dir[] = "/tmp/masq-logtest-XXXXXX";
    if (!mkdtemp(dir)) return 2;
    char store[600], errors[600];
    snprintf(store, sizeof store, "%s/store", dir);
    snprintf(errors, sizeof errors, "%s/stderr.txt", dir);
    int saved = dup(2);
    int fd = open(errors, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    if (fd < 0 || saved < 0 || dup2(fd, 2) < 0) return 2;

    /* Standard error, no callback: the config's level is honoured. */
    open_and_close(store, "info");
    CHECK(stderr_opened_lines(errors) == 1);
    open_and_close(store, "error");
    open_and_close(store, NULL);      /* no log_level: the last one stays */
    CHECK(stderr_opened_lines(errors) == 1);

    /* The embedder's callback: opening a store (with any log_level) keeps it and its level. */
    CHECK_RC(masq_set_log_callback(MASQ_LOG_INFO, on_line, NULL), MASQ_OK);
    open_and_close(store, "error");
    CHECK(opened_lines == 1);
    open_and_close(store, "debug");
    CHECK(opened_lines == 2);
    CHECK(stderr_opened_lines(errors) == 1);   /* nothing went to standard error meanwhile */
    CHECK_RC(masq_set_log_callback(MASQ_LOG_ERROR, on_line, NULL), MASQ_OK);
    open_and_close(store, "debug");
    CHECK(opened_lines == 2);                  /* the callback's own level holds */

    /* Callback removed: standard error again, at MASQ_LOG's level (warn). */
    CHECK_RC(masq_set_log_callback(MASQ_LOG_ERROR, NULL, NULL), MASQ_OK);
    open_and_close(store, NULL);
    CHECK(stderr_opened_lines(errors) == 1);
    CHECK(opened_lines == 2);
    CHECK_RC(masq_set_log_callback(9, NULL, NULL), MASQ_E_INVALID);

    dup2(saved, 2);
    char cleanup[700];
    snprintf(cleanup, sizeof cleanup, "rm -rf %s", dir);
    if (system(cleanup) != 0) return 2;
    printf("log_test: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}

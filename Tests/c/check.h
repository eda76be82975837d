/* Assertions shared by the C tests: count checks, report failures with the
 * library's own message, and insist that every failure comes with one. */
#ifndef MASQ_TEST_CHECK_H
#define MASQ_TEST_CHECK_H

#include "masq.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(cond)) {                                                               \
            failures++;                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

/* Check a call's status; on mismatch show what the library said. */
#define CHECK_RC(call, expected)                                                                    \
    do {                                                                                            \
        int rc_ = (call);                                                                           \
        checks++;                                                                                   \
        if (rc_ != (expected)) {                                                                    \
            failures++;                                                                             \
            fprintf(stderr, "%s:%d: %s returned %s (%s), expected %s\n", __FILE__, __LINE__, #call,    \
                    masq_status_name(rc_), masq_last_error(), #expected);                           \
        } else if (rc_ != MASQ_OK && masq_last_error()[0] == '\0') {                                \
            failures++;                                                                             \
            fprintf(stderr, "%s:%d: %s failed without a message\n", __FILE__, __LINE__, #call);     \
        } else if (rc_ != masq_last_error_code()) {                                                 \
            failures++;                                                                             \
            fprintf(stderr, "%s:%d: masq_last_error_code() disagrees\n", __FILE__, __LINE__);       \
        }                                                                                           \
    } while (0)

#define B(s) ((const uint8_t *)(s))

/* Temporary directories a test made, removed at its end when every check
 * passed (kept on failure, to look at), so that runs leave /tmp clean. */
static char *made_dirs[256];
static int made_count = 0;

static inline void remember_dir(const char *dir) {
    if (made_count < (int)(sizeof made_dirs / sizeof made_dirs[0])) made_dirs[made_count++] = strdup(dir);
}

static inline void remove_dirs(void) {
    for (int i = 0; i < made_count; i++) {
        char command[512];
        if (failures == 0 && made_dirs[i] && snprintf(command, sizeof command, "rm -rf '%s'", made_dirs[i]) < (int)sizeof command)
            if (system(command) != 0) fprintf(stderr, "could not remove %s\n", made_dirs[i]);
        free(made_dirs[i]);
    }
    made_count = 0;
}

#endif

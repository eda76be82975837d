/* Assertions shared by the C tests: count checks, report failures with the
 * library's own message, and insist that every failure comes with one. */
#ifndef MASQ_TEST_CHECK_H
#define MASQ_TEST_CHECK_H

#include "masq.h"
#include <stdio.h>

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

#endif

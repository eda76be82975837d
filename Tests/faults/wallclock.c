/*
 * wallclock.so — run a program with its wall clock off by an offset, and
 * nothing else touched (LD_PRELOAD; built by faults.py with the system's cc).
 *
 *   MASQ_FAULT_CLOCK_OFFSET=600        seconds ahead (negative: behind), fixed
 *   MASQ_FAULT_CLOCK_FILE=/path        the offset in seconds, read again at
 *                                      most every 100 ms: writing the file
 *                                      moves the clock of a running process
 *
 * Only CLOCK_REALTIME (and its coarse variant), gettimeofday, time and
 * timespec_get move. CLOCK_MONOTONIC and every timer stay real — as when a
 * computer's clock is set wrong or set right by NTP. (libfaketime, which the
 * suite tried first, also shifts the absolute monotonic timers of the event
 * loop: with the monotonic clock left alone the loop spins at 100 % of a
 * core, with it faked the timers sometimes never fire — either would be
 * measured as masq's fault.)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);
static _Atomic long long offset_ns;
static _Atomic long long next_read_ns = -1;     /* monotonic ns; -1: not read yet */

static void init(void) {
    if (!real_clock_gettime) real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
}

static long long parse_seconds(const char *text) {
    /* "600", "-90", "600.5" */
    double seconds = strtod(text, NULL);
    return (long long)(seconds * 1e9);
}

static long long current_offset(void) {
    const char *file = getenv("MASQ_FAULT_CLOCK_FILE");
    if (!file) {
        const char *fixed = getenv("MASQ_FAULT_CLOCK_OFFSET");
        return fixed ? parse_seconds(fixed) : 0;
    }
    struct timespec now;
    real_clock_gettime(CLOCK_MONOTONIC, &now);
    long long mono = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
    long long next = atomic_load(&next_read_ns);
    if (next < 0 || mono >= next) {
        atomic_store(&next_read_ns, mono + 100000000LL);
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            char buf[64];
            ssize_t n = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (n > 0) {
                buf[n] = 0;
                atomic_store(&offset_ns, parse_seconds(buf));
            }
        }
    }
    return atomic_load(&offset_ns);
}

static void shift(struct timespec *ts) {
    long long t = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + current_offset();
    ts->tv_sec = t / 1000000000LL;
    ts->tv_nsec = t % 1000000000LL;
    if (ts->tv_nsec < 0) { ts->tv_nsec += 1000000000LL; ts->tv_sec -= 1; }
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    init();
    int r = real_clock_gettime(clock, ts);
    if (r == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) shift(ts);
    return r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    (void)tz;
    struct timespec ts;
    int r = clock_gettime(CLOCK_REALTIME, &ts);
    if (r == 0 && tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    return r;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}

int timespec_get(struct timespec *ts, int base) {
    if (base != TIME_UTC) return 0;
    return clock_gettime(CLOCK_REALTIME, ts) == 0 ? base : 0;
}

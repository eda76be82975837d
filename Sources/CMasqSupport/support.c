#define _GNU_SOURCE
#include "masq_support.h"
#include <string.h>
#include <errno.h>
#include <dlfcn.h>
#include <sys/random.h>
#include <unistd.h>

#define MESSAGE_CAPACITY 1024

static _Thread_local int error_code;
static _Thread_local char error_message[MESSAGE_CAPACITY];
static _Thread_local uintptr_t callback_store;

void masqsupport_set_error(int status, const char *message) {
    error_code = status;
    if (message == NULL) {
        error_message[0] = '\0';
        return;
    }
    size_t n = strlen(message);
    if (n >= MESSAGE_CAPACITY) {
        n = MESSAGE_CAPACITY - 1;
        /* do not cut a UTF-8 sequence in half */
        while (n > 0 && ((unsigned char)message[n] & 0xC0) == 0x80) n--;
    }
    memcpy(error_message, message, n);
    error_message[n] = '\0';
}

void masqsupport_clear_error(void) {
    error_code = 0;
    error_message[0] = '\0';
}

int masqsupport_error_code(void) { return error_code; }

const char *masqsupport_error_message(void) { return error_message; }

void masqsupport_set_in_callback(uintptr_t store_tag) { callback_store = store_tag; }

uintptr_t masqsupport_in_callback(void) { return callback_store; }

void masqsupport_wipe(void *ptr, size_t len) {
    volatile unsigned char *p = (volatile unsigned char *)ptr;
    while (len--) *p++ = 0;
}

int masqsupport_random(void *buf, size_t len) {
    unsigned char *p = (unsigned char *)buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int masqsupport_image_path(char *buf, size_t size) {
    Dl_info info;
    if (dladdr((void *)&masqsupport_image_path, &info) == 0 || info.dli_fname == NULL) return -1;
    const char *name = info.dli_fname;
    /* Linked into the executable: dladdr reports argv[0], which may be a bare
     * command name found on PATH. Ask the kernel for the real file instead. */
    if (strchr(name, '/') == NULL || strcmp(name, program_invocation_name) == 0) {
        ssize_t n = readlink("/proc/self/exe", buf, size - 1);
        if (n <= 0) return -1;
        buf[n] = '\0';
        return 0;
    }
    size_t n = strlen(name);
    if (n + 1 > size) return -1;
    memcpy(buf, name, n + 1);
    return 0;
}

#if defined(__GLIBC__)
#include <malloc.h>
#endif

void masqsupport_keep_freed_memory(void) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

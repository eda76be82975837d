/* Small C helpers for the kernel that Swift cannot express directly.
 * Prefixed masqsupport_ (not masq_) so the export list of libmasq.so, which
 * keeps only masq_*, hides them. */
#ifndef MASQ_SUPPORT_H
#define MASQ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

/** Per-thread "last error": status code and a message (truncated to fit). */
void masqsupport_set_error(int status, const char *message);
void masqsupport_clear_error(void);
int masqsupport_error_code(void);
const char *masqsupport_error_message(void);

/** Per-thread flag: non-zero while the current thread runs a watch callback. */
void masqsupport_set_in_callback(uintptr_t store_tag);
uintptr_t masqsupport_in_callback(void);

/** Overwrite memory in a way the compiler may not elide (for key material). */
void masqsupport_wipe(void *ptr, size_t len);

/** Fill buf with len bytes from the OS CSPRNG (getrandom). 0 on success, -1 on failure. */
int masqsupport_random(void *buf, size_t len);

/** Path of the shared object (or executable) holding the kernel, copied into
 *  buf (NUL-terminated). 0 on success, -1 if unknown or too long. */
int masqsupport_image_path(char *buf, size_t size);

/** For long-running servers (a mesh node): keep freed heap memory for reuse
 *  instead of returning it to the kernel (glibc's trim and mmap thresholds).
 *  A no-op elsewhere. Call once at start-up, before threads. */
void masqsupport_keep_freed_memory(void);

#endif

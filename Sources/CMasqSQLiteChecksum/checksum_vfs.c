/*
 * checksum_vfs.c: the "masq-cksum" VFS shim (see include/checksum_vfs.h for
 * the why, the threads and the ownership; plugins/storage-sqlite/README.md
 * for the on-disk layout).
 *
 * Written from the documented VFS interface of sqlite3.h and the documented
 * design of SQLite's ext/misc/cksumvfs.c; the code and the checksum are ours.
 *
 * Shape: the shim is a VFS that forwards every call to the VFS that was the
 * default when it was registered (the "base" VFS). Only files opened as
 * SQLITE_OPEN_MAIN_DB get our io methods; our file object is a CkFile
 * header followed by the base VFS's own file object. Every other file (WAL,
 * journals, temp files) is opened by the base VFS directly into the space
 * SQLite gave us, with the base's io methods, so it costs nothing.
 *
 * Per main file we track `state`, from the most recent database header we
 * have seen (a write of page 1, a read of page 1 or of the first 100 bytes,
 * or a direct look at the file in ck_refresh()):
 *   CK_ON      header byte 20 (reserved bytes per page) == 8: every whole
 *              page written gets a checksum, every whole page read is checked;
 *   CK_OFF     any other reserve: pure pass-through;
 *   CK_UNKNOWN nothing seen yet (an empty file): look at the file first.
 * A checkpoint writes pages in ascending page order, so when page 1 is part
 * of it, its header is seen before any other page; and at the start of every
 * checkpoint (SQLITE_FCNTL_CKPT_START) we re-read the header from the file,
 * so a connection never writes with a state another connection has changed
 * (by VACUUM) since this one last looked.
 */
#include "checksum_vfs.h"

#include <sqlite3.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* The checksum                                                        */
/* ------------------------------------------------------------------ */

/*
 * Two 32-bit running sums over the page taken as little-endian 32-bit words
 * (a Fletcher-like 64-bit checksum, the family SQLite's WAL and cksumvfs
 * use): for each pair of words (w0, w1): a += w0 + b; b += w1 + a.
 * Stored as a then b, little-endian, in the last 8 bytes of the page, and
 * computed over the page's first pageSize-8 bytes.
 *
 * - The sums start from constants mixed with the page number, so a page
 *   written at the wrong offset (or a copy of another page) does not
 *   verify, and an all-zero page (a hole, a lost write) never verifies:
 *   the step (a, b) -> (a + b, a + 2b) is invertible, so a non-zero start
 *   can never end at the stored (0, 0).
 * - Any change confined to one 32-bit word is always detected: the
 *   difference propagates as d*F(k), d*F(k+1) (consecutive Fibonacci-like
 *   numbers, one of them odd), which cannot both vanish mod 2^32.
 * - It is not cryptographic: it detects accidents, not an attacker.
 * Byte-wise loads keep it endian-independent; compilers turn them into
 * plain loads on little-endian machines. About 2 adds per 8 bytes.
 */
#define CK_SEED_A 0x4d415351u /* "MASQ" */
#define CK_SEED_B 0x636b736du /* "cksm" */

static inline uint32_t ck_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void ck_put_le32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* Checksum of page `pgno` (1-based), `pageSize` bytes, into out[8]. */
static void ck_compute(const unsigned char *page, int pageSize, sqlite3_int64 pgno, unsigned char out[8]) {
    uint32_t a = CK_SEED_A ^ (uint32_t)pgno;
    uint32_t b = CK_SEED_B ^ (uint32_t)((uint64_t)pgno >> 32);
    const unsigned char *q = page;
    const unsigned char *end = page + pageSize - MASQ_CKSUM_RESERVE;
    for (; q < end; q += 8) {
        a += ck_le32(q) + b;
        b += ck_le32(q + 4) + a;
    }
    ck_put_le32(out, a);
    ck_put_le32(out + 4, b);
}

/* Does the page's stored checksum match its bytes? */
static int ck_matches(const unsigned char *page, int pageSize, sqlite3_int64 pgno) {
    unsigned char sum[8];
    ck_compute(page, pageSize, pgno, sum);
    return memcmp(sum, page + pageSize - MASQ_CKSUM_RESERVE, MASQ_CKSUM_RESERVE) == 0;
}

/* ------------------------------------------------------------------ */
/* The file object                                                     */
/* ------------------------------------------------------------------ */

enum { CK_UNKNOWN = 0, CK_OFF = 1, CK_ON = 2 };

typedef struct CkFile {
    sqlite3_file base;      /* pMethods: one of ck_io[] */
    const char *zName;      /* the file's name (SQLite keeps it valid until xClose), for logs */
    int state;              /* CK_UNKNOWN, CK_OFF, CK_ON */
    int pageSize;           /* from the latest header seen; 0 if unknown */
    unsigned char *scratch; /* a page-sized buffer for writes (sqlite3_malloc) */
    int scratchSize;
} CkFile;

/* The base VFS's file object follows ours, 16-byte aligned. */
#define CK_FILE_SIZE ((int)((sizeof(CkFile) + 15) & ~(size_t)15))
#define CK_ORIG(p) ((sqlite3_file *)((char *)(p) + CK_FILE_SIZE))

/* Private file-control opcodes (SQLite keeps opcodes below 100 for itself).
 * masq_cksum_enable() and masq_cksum_verify_all() talk to the main file
 * through sqlite3_file_control() with these, so they work on any connection
 * and simply get SQLITE_NOTFOUND from a file that is not ours. */
#define CK_FCNTL_INFO 0x6d430101   /* arg: CkInfo*  */
#define CK_FCNTL_VERIFY 0x6d430102 /* arg: CkVerify* */

typedef struct CkInfo {
    int state;
    int pageSize;
} CkInfo;

typedef struct CkVerify {
    int rc;
    char *report;
} CkVerify;

static const char ck_magic[16] = "SQLite format 3"; /* with its NUL: 16 bytes */

static int ck_has_magic(const unsigned char *h) { return memcmp(h, ck_magic, 16) == 0; }

/* Is (iAmt, iOfst) exactly one whole, aligned page of a possible page size? */
static int ck_is_page(int iAmt, sqlite3_int64 iOfst) {
    return iAmt >= 512 && iAmt <= 65536 && (iAmt & (iAmt - 1)) == 0 && (iOfst & (iAmt - 1)) == 0;
}

/* Take page size and checksum state from a database header (>= 100 bytes). */
static int ck_take_header(CkFile *p, const unsigned char *h) {
    if (!ck_has_magic(h)) return 0;
    int ps = (h[16] << 8) | (h[17] << 16); /* 1 means 65536 */
    if (ps >= 512 && ps <= 65536 && (ps & (ps - 1)) == 0) p->pageSize = ps;
    p->state = h[20] == MASQ_CKSUM_RESERVE ? CK_ON : CK_OFF;
    return 1;
}

/* Look at the header as it is in the file now. An empty (or too short)
 * file makes the state CK_UNKNOWN; a file that is not a database keeps
 * whatever we knew (SQLite will refuse it itself). */
static void ck_refresh(CkFile *p) {
    unsigned char h[100];
    sqlite3_file *o = CK_ORIG(p);
    int rc = o->pMethods->xRead(o, h, (int)sizeof h, 0);
    if (rc == SQLITE_OK) {
        ck_take_header(p, h);
    } else if (rc == SQLITE_IOERR_SHORT_READ) {
        p->state = CK_UNKNOWN;
    }
}

static int ck_scratch(CkFile *p, int n) {
    if (p->scratchSize >= n) return SQLITE_OK;
    unsigned char *b = sqlite3_realloc(p->scratch, n);
    if (b == NULL) return SQLITE_NOMEM;
    p->scratch = b;
    p->scratchSize = n;
    return SQLITE_OK;
}

static int ck_fault(CkFile *p, sqlite3_int64 pgno, const char *what) {
    sqlite3_log(SQLITE_IOERR_DATA, "masq-cksum: checksum mismatch in page %lld of \"%s\"%s", pgno,
                p->zName ? p->zName : "?", what ? what : "");
    return SQLITE_IOERR_DATA;
}

/* ------------------------------------------------------------------ */
/* io methods of a main database file                                  */
/* ------------------------------------------------------------------ */

static int ckClose(sqlite3_file *f) {
    CkFile *p = (CkFile *)f;
    sqlite3_file *o = CK_ORIG(p);
    int rc = o->pMethods ? o->pMethods->xClose(o) : SQLITE_OK;
    sqlite3_free(p->scratch);
    p->scratch = NULL;
    p->scratchSize = 0;
    return rc;
}

static int ckRead(sqlite3_file *f, void *zBuf, int iAmt, sqlite3_int64 iOfst) {
    CkFile *p = (CkFile *)f;
    sqlite3_file *o = CK_ORIG(p);
    int rc = o->pMethods->xRead(o, zBuf, iAmt, iOfst);
    if (rc != SQLITE_OK) return rc; /* short reads included: nothing to verify */
    unsigned char *d = zBuf;

    if (!ck_is_page(iAmt, iOfst)) {
        /* A partial read (SQLite reads the first 100 bytes of the file when
         * it opens it, and a few header fields later): not verifiable, but a
         * header tells us the state. */
        if (iOfst == 0 && iAmt >= 100) ck_take_header(p, d);
        return SQLITE_OK;
    }

    sqlite3_int64 pgno = iOfst / iAmt + 1;
    int expected; /* should this page carry a checksum? */
    if (iOfst == 0 && ck_has_magic(d)) {
        /* Page 1 says for itself. */
        if (d[20] == MASQ_CKSUM_RESERVE) {
            expected = 1;
        } else {
            /* No checksums, says the header; or was byte 20 itself damaged?
             * If the trailer is the checksum the page would have with byte 20
             * set to 8, it was (a page without reserve matches by chance with
             * probability 2^-64). */
            unsigned char saved = d[20];
            d[20] = MASQ_CKSUM_RESERVE;
            int damaged = ck_matches(d, iAmt, 1);
            d[20] = saved;
            if (damaged) return ck_fault(p, 1, " (reserved-bytes field of the header)");
            expected = 0;
        }
        ck_take_header(p, d);
    } else {
        if (p->state == CK_UNKNOWN) ck_refresh(p);
        expected = p->state == CK_ON;
    }
    if (expected && !ck_matches(d, iAmt, pgno)) {
        if (iOfst != 0) {
            /* Did another connection change the reserve (VACUUM) since we
             * last saw the header? Then this page legitimately has none. */
            ck_refresh(p);
            if (p->state != CK_ON) return SQLITE_OK;
        }
        return ck_fault(p, pgno, NULL);
    }
    return SQLITE_OK;
}

/* A write that is not exactly one page while checksums are on: rewrite each
 * touched page whole (read, check, patch, re-checksum). SQLite writes whole
 * pages to the main file, so this is a safety net; it logs SQLITE_NOTICE. */
static int ck_write_partial(CkFile *p, const unsigned char *buf, int iAmt, sqlite3_int64 iOfst) {
    sqlite3_file *o = CK_ORIG(p);
    int ps = p->pageSize;
    sqlite3_log(SQLITE_NOTICE, "masq-cksum: sub-page write (%d bytes at %lld) of \"%s\"", iAmt, iOfst,
                p->zName ? p->zName : "?");
    if (ps == 0) return o->pMethods->xWrite(o, buf, iAmt, iOfst);
    int rc = ck_scratch(p, ps);
    if (rc != SQLITE_OK) return rc;
    unsigned char *s = p->scratch;
    sqlite3_int64 end = iOfst + iAmt;
    for (sqlite3_int64 pg = iOfst / ps; pg * ps < end; pg++) {
        sqlite3_int64 off = pg * ps;
        rc = o->pMethods->xRead(o, s, ps, off);
        if (rc == SQLITE_OK) {
            if (!ck_matches(s, ps, pg + 1)) return ck_fault(p, pg + 1, " (before a sub-page write)");
        } else if (rc != SQLITE_IOERR_SHORT_READ) { /* short: a new page, zero-filled */
            return rc;
        }
        sqlite3_int64 lo = off > iOfst ? off : iOfst;
        sqlite3_int64 hi = off + ps < end ? off + ps : end;
        memcpy(s + (lo - off), buf + (lo - iOfst), (size_t)(hi - lo));
        ck_compute(s, ps, pg + 1, s + ps - MASQ_CKSUM_RESERVE);
        rc = o->pMethods->xWrite(o, s, ps, off);
        if (rc != SQLITE_OK) return rc;
    }
    return SQLITE_OK;
}

static int ckWrite(sqlite3_file *f, const void *zBuf, int iAmt, sqlite3_int64 iOfst) {
    CkFile *p = (CkFile *)f;
    sqlite3_file *o = CK_ORIG(p);
    const unsigned char *d = zBuf;

    /* A header being written decides (a new database, a VACUUM). */
    if (!(iOfst == 0 && iAmt >= 100 && ck_take_header(p, d)) && p->state == CK_UNKNOWN) ck_refresh(p);
    if (p->state != CK_ON) return o->pMethods->xWrite(o, zBuf, iAmt, iOfst);

    if (ck_is_page(iAmt, iOfst) && (p->pageSize == 0 || p->pageSize == iAmt)) {
        /* Checksum a copy: the caller's buffer is const (and may be a page
         * SQLite keeps in its cache). */
        int rc = ck_scratch(p, iAmt);
        if (rc != SQLITE_OK) return rc;
        memcpy(p->scratch, d, (size_t)iAmt - MASQ_CKSUM_RESERVE);
        ck_compute(p->scratch, iAmt, iOfst / iAmt + 1, p->scratch + iAmt - MASQ_CKSUM_RESERVE);
        return o->pMethods->xWrite(o, p->scratch, iAmt, iOfst);
    }
    return ck_write_partial(p, d, iAmt, iOfst);
}

static int ckTruncate(sqlite3_file *f, sqlite3_int64 size) {
    sqlite3_file *o = CK_ORIG(f);
    return o->pMethods->xTruncate(o, size);
}

static int ckSync(sqlite3_file *f, int flags) {
    sqlite3_file *o = CK_ORIG(f);
    return o->pMethods->xSync(o, flags);
}

static int ckFileSize(sqlite3_file *f, sqlite3_int64 *pSize) {
    sqlite3_file *o = CK_ORIG(f);
    return o->pMethods->xFileSize(o, pSize);
}

static int ckLock(sqlite3_file *f, int lock) {
    sqlite3_file *o = CK_ORIG(f);
    return o->pMethods->xLock(o, lock);
}

static int ckUnlock(sqlite3_file *f, int lock) {
    sqlite3_file *o = CK_ORIG(f);
    return o->pMethods->xUnlock(o, lock);
}

static int ckCheckReservedLock(sqlite3_file *f, int *pResOut) {
    sqlite3_file *o = CK_ORIG(f);
    return o->pMethods->xCheckReservedLock(o, pResOut);
}

/* Scrub the whole file (masq_cksum_verify_all). */
static int ck_verify_file(CkFile *p, char **report) {
    sqlite3_file *o = CK_ORIG(p);
    unsigned char h[100];
    int rc = o->pMethods->xRead(o, h, (int)sizeof h, 0);
    if (rc == SQLITE_IOERR_SHORT_READ) {
        *report = sqlite3_mprintf("the database file is empty (pages may still be in the WAL): nothing to verify");
        return SQLITE_OK;
    }
    if (rc != SQLITE_OK) return rc;
    if (!ck_take_header(p, h) || p->pageSize == 0) {
        *report = sqlite3_mprintf("not an SQLite database header");
        return SQLITE_NOTADB;
    }
    if (p->state != CK_ON) {
        *report = sqlite3_mprintf("checksums are off (the header says %d reserved bytes per page, not %d)", h[20],
                                  MASQ_CKSUM_RESERVE);
        return SQLITE_NOTFOUND;
    }
    int ps = p->pageSize;
    sqlite3_int64 size = 0;
    rc = o->pMethods->xFileSize(o, &size);
    if (rc != SQLITE_OK) return rc;
    sqlite3_int64 pages = size / ps;
    /* The in-header database size, when valid, bounds the pages in use
     * (the file may be longer: preallocated chunks, a failed truncate). */
    uint32_t inHeader = (uint32_t)h[28] << 24 | (uint32_t)h[29] << 16 | (uint32_t)h[30] << 8 | h[31];
    if (inHeader != 0 && memcmp(h + 24, h + 92, 4) == 0 && inHeader < pages) pages = inHeader;

    rc = ck_scratch(p, ps);
    if (rc != SQLITE_OK) return rc;
    sqlite3_int64 bad = 0;
    char *list = sqlite3_mprintf("");
    for (sqlite3_int64 pg = 1; pg <= pages; pg++) {
        int ok = 0;
        for (int attempt = 0; attempt < 2 && !ok; attempt++) {
            if (attempt) sqlite3_sleep(10); /* a concurrent checkpoint writing it */
            rc = o->pMethods->xRead(o, p->scratch, ps, (pg - 1) * ps);
            if (rc != SQLITE_OK) {
                sqlite3_free(list);
                return rc;
            }
            ok = ck_matches(p->scratch, ps, pg);
        }
        if (!ok) {
            if (bad < 50) list = sqlite3_mprintf("%z%s%lld", list, bad ? ", " : "", pg);
            bad++;
            sqlite3_log(SQLITE_IOERR_DATA, "masq-cksum: verify: checksum mismatch in page %lld of \"%s\"", pg,
                        p->zName ? p->zName : "?");
        }
    }
    if (bad == 0) {
        *report = sqlite3_mprintf("%lld pages of %d bytes checked, all good", pages, ps);
        sqlite3_free(list);
        return SQLITE_OK;
    }
    *report = sqlite3_mprintf("%lld pages of %d bytes checked, %lld bad: %z%s", pages, ps, bad, list,
                              bad > 50 ? ", ..." : "");
    return SQLITE_IOERR_DATA;
}

static int ckFileControl(sqlite3_file *f, int op, void *pArg) {
    CkFile *p = (CkFile *)f;
    sqlite3_file *o = CK_ORIG(p);
    switch (op) {
    case CK_FCNTL_INFO: {
        CkInfo *info = pArg;
        if (p->state == CK_UNKNOWN) ck_refresh(p);
        info->state = p->state;
        info->pageSize = p->pageSize;
        return SQLITE_OK;
    }
    case CK_FCNTL_VERIFY: {
        CkVerify *v = pArg;
        v->report = NULL;
        v->rc = ck_verify_file(p, &v->report);
        return SQLITE_OK;
    }
    case SQLITE_FCNTL_CKPT_START:
        /* Another connection may have changed the reserve since we last
         * saw a header; pages are about to be written with what we know. */
        ck_refresh(p);
        break;
    case SQLITE_FCNTL_PRAGMA: {
        /* PRAGMA masq_checksum: "on", "off" or "unknown" (empty file). */
        char **a = pArg;
        if (a[1] && sqlite3_stricmp(a[1], "masq_checksum") == 0) {
            if (a[2]) {
                a[0] = sqlite3_mprintf("masq_checksum is read-only (see masq_cksum_enable)");
                return SQLITE_ERROR;
            }
            if (p->state == CK_UNKNOWN) ck_refresh(p);
            a[0] = sqlite3_mprintf("%s", p->state == CK_ON ? "on" : p->state == CK_OFF ? "off" : "unknown");
            return SQLITE_OK;
        }
        break;
    }
    case SQLITE_FCNTL_VFSNAME: {
        int rc = o->pMethods->xFileControl(o, op, pArg);
        char *inner = rc == SQLITE_OK ? *(char **)pArg : NULL;
        *(char **)pArg = inner ? sqlite3_mprintf("%s/%z", MASQ_CKSUM_VFS_NAME, inner)
                               : sqlite3_mprintf("%s", MASQ_CKSUM_VFS_NAME);
        return SQLITE_OK;
    }
    default:
        break;
    }
    return o->pMethods->xFileControl(o, op, pArg);
}

static int ckSectorSize(sqlite3_file *f) {
    sqlite3_file *o = CK_ORIG(f);
    return o->pMethods->xSectorSize(o);
}

static int ckDeviceCharacteristics(sqlite3_file *f) {
    sqlite3_file *o = CK_ORIG(f);
    return o->pMethods->xDeviceCharacteristics(o);
}

static int ckShmMap(sqlite3_file *f, int iPg, int pgsz, int bExtend, void volatile **pp) {
    sqlite3_file *o = CK_ORIG(f);
    return o->pMethods->xShmMap(o, iPg, pgsz, bExtend, pp);
}

static int ckShmLock(sqlite3_file *f, int offset, int n, int flags) {
    sqlite3_file *o = CK_ORIG(f);
    return o->pMethods->xShmLock(o, offset, n, flags);
}

static void ckShmBarrier(sqlite3_file *f) {
    sqlite3_file *o = CK_ORIG(f);
    o->pMethods->xShmBarrier(o);
}

static int ckShmUnmap(sqlite3_file *f, int deleteFlag) {
    sqlite3_file *o = CK_ORIG(f);
    return o->pMethods->xShmUnmap(o, deleteFlag);
}

/* Memory-mapped reads would bypass xRead, and so the check: while the file
 * has (or may have) checksums, hand out no mapping, and SQLite falls back to
 * xRead. A file without checksums keeps memory-mapped I/O if it is enabled. */
static int ckFetch(sqlite3_file *f, sqlite3_int64 iOfst, int iAmt, void **pp) {
    CkFile *p = (CkFile *)f;
    sqlite3_file *o = CK_ORIG(p);
    if (p->state != CK_OFF || o->pMethods->iVersion < 3 || o->pMethods->xFetch == NULL) {
        *pp = NULL;
        return SQLITE_OK;
    }
    return o->pMethods->xFetch(o, iOfst, iAmt, pp);
}

static int ckUnfetch(sqlite3_file *f, sqlite3_int64 iOfst, void *pPage) {
    sqlite3_file *o = CK_ORIG(f);
    if (o->pMethods->iVersion < 3 || o->pMethods->xUnfetch == NULL) return SQLITE_OK;
    return o->pMethods->xUnfetch(o, iOfst, pPage);
}

/* One table per io-methods version, so a file says no more than its base
 * file can do (a version-1 base has no shared memory, so no WAL). */
static sqlite3_io_methods ck_io[3];

static const sqlite3_io_methods ck_io_template = {
    3,
    ckClose,
    ckRead,
    ckWrite,
    ckTruncate,
    ckSync,
    ckFileSize,
    ckLock,
    ckUnlock,
    ckCheckReservedLock,
    ckFileControl,
    ckSectorSize,
    ckDeviceCharacteristics,
    ckShmMap,
    ckShmLock,
    ckShmBarrier,
    ckShmUnmap,
    ckFetch,
    ckUnfetch,
};

/* ------------------------------------------------------------------ */
/* VFS methods: all forwarded to the base VFS, except xOpen            */
/* ------------------------------------------------------------------ */

#define CK_BASE(vfs) ((sqlite3_vfs *)(vfs)->pAppData)

static int ckOpen(sqlite3_vfs *vfs, sqlite3_filename zName, sqlite3_file *f, int flags, int *pOutFlags) {
    sqlite3_vfs *base = CK_BASE(vfs);
    if ((flags & SQLITE_OPEN_MAIN_DB) == 0) {
        /* WAL, journals, temp files: the base VFS's own file, unwrapped. */
        return base->xOpen(base, zName, f, flags, pOutFlags);
    }
    CkFile *p = (CkFile *)f;
    memset(p, 0, CK_FILE_SIZE);
    sqlite3_file *o = CK_ORIG(p);
    int rc = base->xOpen(base, zName, o, flags, pOutFlags);
    if (o->pMethods == NULL) {
        p->base.pMethods = NULL; /* nothing to close */
        return rc;
    }
    int version = o->pMethods->iVersion;
    if (version > 3) version = 3;
    if (version < 1) version = 1;
    p->base.pMethods = &ck_io[version - 1];
    p->zName = zName;
    p->state = CK_UNKNOWN;
    return rc;
}

static int ckDelete(sqlite3_vfs *vfs, const char *zName, int syncDir) {
    return CK_BASE(vfs)->xDelete(CK_BASE(vfs), zName, syncDir);
}

static int ckAccess(sqlite3_vfs *vfs, const char *zName, int flags, int *pResOut) {
    return CK_BASE(vfs)->xAccess(CK_BASE(vfs), zName, flags, pResOut);
}

static int ckFullPathname(sqlite3_vfs *vfs, const char *zName, int nOut, char *zOut) {
    return CK_BASE(vfs)->xFullPathname(CK_BASE(vfs), zName, nOut, zOut);
}

static void *ckDlOpen(sqlite3_vfs *vfs, const char *zPath) { return CK_BASE(vfs)->xDlOpen(CK_BASE(vfs), zPath); }

static void ckDlError(sqlite3_vfs *vfs, int nByte, char *zErrMsg) { CK_BASE(vfs)->xDlError(CK_BASE(vfs), nByte, zErrMsg); }

static void (*ckDlSym(sqlite3_vfs *vfs, void *p, const char *zSym))(void) {
    return CK_BASE(vfs)->xDlSym(CK_BASE(vfs), p, zSym);
}

static void ckDlClose(sqlite3_vfs *vfs, void *pHandle) { CK_BASE(vfs)->xDlClose(CK_BASE(vfs), pHandle); }

static int ckRandomness(sqlite3_vfs *vfs, int nByte, char *zBufOut) {
    return CK_BASE(vfs)->xRandomness(CK_BASE(vfs), nByte, zBufOut);
}

static int ckSleep(sqlite3_vfs *vfs, int nMicro) { return CK_BASE(vfs)->xSleep(CK_BASE(vfs), nMicro); }

static int ckCurrentTime(sqlite3_vfs *vfs, double *pTimeOut) {
    return CK_BASE(vfs)->xCurrentTime(CK_BASE(vfs), pTimeOut);
}

static int ckGetLastError(sqlite3_vfs *vfs, int a, char *b) {
    sqlite3_vfs *base = CK_BASE(vfs);
    return base->xGetLastError ? base->xGetLastError(base, a, b) : 0;
}

static int ckCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *p) {
    return CK_BASE(vfs)->xCurrentTimeInt64(CK_BASE(vfs), p);
}

static int ckSetSystemCall(sqlite3_vfs *vfs, const char *zName, sqlite3_syscall_ptr pCall) {
    return CK_BASE(vfs)->xSetSystemCall(CK_BASE(vfs), zName, pCall);
}

static sqlite3_syscall_ptr ckGetSystemCall(sqlite3_vfs *vfs, const char *zName) {
    return CK_BASE(vfs)->xGetSystemCall(CK_BASE(vfs), zName);
}

static const char *ckNextSystemCall(sqlite3_vfs *vfs, const char *zName) {
    return CK_BASE(vfs)->xNextSystemCall(CK_BASE(vfs), zName);
}

/* ------------------------------------------------------------------ */
/* Registration and the public functions                               */
/* ------------------------------------------------------------------ */

static sqlite3_vfs ck_vfs;
static int ck_register_rc = SQLITE_ERROR;
static pthread_once_t ck_once = PTHREAD_ONCE_INIT;

static void ck_register_once(void) {
    int rc = sqlite3_initialize();
    if (rc != SQLITE_OK) {
        ck_register_rc = rc;
        return;
    }
    /* Another copy of this code in the process (another shared object that
     * links it) may have registered the name already: use that one. */
    if (sqlite3_vfs_find(MASQ_CKSUM_VFS_NAME) != NULL) {
        ck_register_rc = SQLITE_OK;
        return;
    }
    sqlite3_vfs *base = sqlite3_vfs_find(NULL);
    if (base == NULL) {
        ck_register_rc = SQLITE_ERROR;
        return;
    }
    for (int i = 0; i < 3; i++) {
        ck_io[i] = ck_io_template;
        ck_io[i].iVersion = i + 1;
    }
    sqlite3_vfs v = {
        .iVersion = base->iVersion < 3 ? base->iVersion : 3,
        .szOsFile = CK_FILE_SIZE + base->szOsFile,
        .mxPathname = base->mxPathname,
        .pNext = NULL,
        .zName = MASQ_CKSUM_VFS_NAME,
        .pAppData = base,
        .xOpen = ckOpen,
        .xDelete = ckDelete,
        .xAccess = ckAccess,
        .xFullPathname = ckFullPathname,
        .xDlOpen = base->xDlOpen ? ckDlOpen : NULL,
        .xDlError = base->xDlError ? ckDlError : NULL,
        .xDlSym = base->xDlSym ? ckDlSym : NULL,
        .xDlClose = base->xDlClose ? ckDlClose : NULL,
        .xRandomness = ckRandomness,
        .xSleep = ckSleep,
        .xCurrentTime = ckCurrentTime,
        .xGetLastError = ckGetLastError,
        .xCurrentTimeInt64 = base->iVersion >= 2 && base->xCurrentTimeInt64 ? ckCurrentTimeInt64 : NULL,
        .xSetSystemCall = base->iVersion >= 3 && base->xSetSystemCall ? ckSetSystemCall : NULL,
        .xGetSystemCall = base->iVersion >= 3 && base->xGetSystemCall ? ckGetSystemCall : NULL,
        .xNextSystemCall = base->iVersion >= 3 && base->xNextSystemCall ? ckNextSystemCall : NULL,
    };
    ck_vfs = v;
    ck_register_rc = sqlite3_vfs_register(&ck_vfs, 0);
}

int masq_cksum_register(void) {
    if (pthread_once(&ck_once, ck_register_once) != 0) return SQLITE_ERROR;
    return ck_register_rc;
}

/* One integer from a single-row statement (page_count), or -1. */
static sqlite3_int64 ck_query_int(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s = NULL;
    sqlite3_int64 v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW) {
        v = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
    return v;
}

int masq_cksum_enable(sqlite3 *db) {
    CkInfo info;
    if (db == NULL || sqlite3_file_control(db, "main", CK_FCNTL_INFO, &info) != SQLITE_OK) {
        return 0; /* not opened through masq-cksum (or :memory:) */
    }
    /* A read loads page 1 (from the WAL, if it is there), so the b-tree
     * knows the file's actual page size and reserve; on an empty file it
     * reads nothing and writes nothing. */
    if (sqlite3_exec(db, "SELECT 1 FROM sqlite_schema LIMIT 1", NULL, NULL, NULL) != SQLITE_OK) return 0;
    sqlite3_int64 pages = ck_query_int(db, "PRAGMA main.page_count");
    if (pages < 0) return 0;

    /* SQLITE_FCNTL_RESERVE_BYTES answers max(requested, actual) and then
     * sets the request; so clear the request, read the actual reserve,
     * and request 8. On an empty database the request takes effect at once
     * (a reserve never shrinks there); on a non-empty one it waits for the
     * next VACUUM on this connection. */
    int n = 0;
    sqlite3_file_control(db, "main", SQLITE_FCNTL_RESERVE_BYTES, &n);
    n = -1;
    sqlite3_file_control(db, "main", SQLITE_FCNTL_RESERVE_BYTES, &n);
    int actual = n;
    n = MASQ_CKSUM_RESERVE;
    sqlite3_file_control(db, "main", SQLITE_FCNTL_RESERVE_BYTES, &n);
    if (pages == 0) {
        n = -1;
        sqlite3_file_control(db, "main", SQLITE_FCNTL_RESERVE_BYTES, &n);
        return n == MASQ_CKSUM_RESERVE;
    }
    return actual == MASQ_CKSUM_RESERVE;
}

int masq_cksum_verify_all(sqlite3 *db, char **report) {
    CkVerify v = {SQLITE_MISUSE, NULL};
    if (report) *report = NULL;
    if (db == NULL || sqlite3_file_control(db, "main", CK_FCNTL_VERIFY, &v) != SQLITE_OK) {
        if (report) *report = sqlite3_mprintf("the main database is not opened through the %s VFS", MASQ_CKSUM_VFS_NAME);
        return SQLITE_MISUSE;
    }
    if (report) {
        *report = v.report;
    } else {
        sqlite3_free(v.report);
    }
    return v.rc;
}

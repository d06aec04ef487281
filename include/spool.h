/*
 * spool — bytes of unknown size on their way somewhere else (a message
 * retrieved for an HTTP response, an attachment, a TOP reply): kept in
 * memory up to a threshold, then moved to an unlinked temporary file
 * (O_TMPFILE, mode 0600) in a given directory, so memory does not follow
 * the size of the mail.  Also the one write-all loop and the one temporary
 * file opener.
 *
 * A struct spool is plain data owned by its user: spool_init() it, write to
 * it, then take its content (spool_take) or drop it (spool_free).  Not
 * thread-safe; one user at a time.
 *
 * Errors (struct err): ERR_INTERNAL for memory and file failures (the
 * message names the directory or the errno text).
 */
#ifndef POP3BRIDGE_SPOOL_H
#define POP3BRIDGE_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define SPOOL_MEM_DEFAULT (1u << 20) /* bytes kept in memory before a file is used */
#define SPOOL_PATH_MAX 4096           /* bytes of a temporary file's path (no O_TMPFILE) */

struct spool {
    const char *dir;   /* directory of the temporary file (borrowed); NULL: memory only */
    size_t mem_max;    /* past this many bytes the content moves to a file */
    uint64_t cap;      /* 0: no cap; bytes past the cap are dropped silently */
    char *mem;         /* the bytes while in memory, NUL-terminated (may be NULL) */
    size_t len, alloc;
    int fd;            /* the file once used, else -1 */
    uint64_t size;     /* bytes kept so far */
};

void spool_init(struct spool *s, const char *dir, size_t mem_max, uint64_t cap);
/* Append len bytes (cut at the cap).  0, or -1 with e. */
int spool_write(struct spool *s, const void *data, size_t len, struct err *e);
/* Release the memory and close the file; the spool may be reused after
 * spool_init().  NULL-safe. */
void spool_free(struct spool *s);

/* What a spool holds, handed over: either mem (malloc'd, len bytes plus a
 * NUL; free() it) or fd (an unlinked file of size bytes; close() it), the
 * other NULL / -1.  The spool is left empty.  -1 with e when out of memory
 * (an empty spool still gives a malloc'd "" buffer). */
struct spool_content {
    char *mem;
    size_t len;
    int fd;
    uint64_t size;
};
int spool_take(struct spool *s, struct spool_content *out, struct err *e);

/* An unlinked temporary file (O_TMPFILE | O_RDWR | O_CLOEXEC, 0600) in dir;
 * where the file system lacks O_TMPFILE, a named 0600 file removed at once.
 * The descriptor, or -1 with e ("cannot create a temporary file in DIR"). */
int spool_tmpfile(const char *dir, struct err *e);
/* Write all n bytes to fd, retrying after EINTR and short writes.  0, or -1
 * with errno set. */
int spool_write_all(int fd, const void *p, size_t n);

#endif

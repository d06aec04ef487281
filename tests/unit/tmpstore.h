/* tmpstore.h — a temporary directory, and a store (SQLite, store_open) in
 * it, for the unit tests of the modules that work on a state directory
 * (test_poller.c, test_delivery.c, test_event.c, ...).
 *
 * tmpdir_make names and makes /tmp/<name>-test-XXXXXX, tmpdir_remove takes
 * it away with everything in it; tmpstore_open does the first and opens a
 * store there, tmpstore_close closes the store and removes the directory;
 * tmpstore_setup and tmpstore_teardown do both for a cmocka state, a
 * struct tmpstore, when the test needs nothing more.
 * Failures are said on stderr (the group set-up that calls them returns
 * -1, which cmocka reports). */
#ifndef TMPSTORE_H
#define TMPSTORE_H

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "store.h"

#define TMPDIR_MAX 64      /* a directory tmpdir_make names, its NUL included */
#define TMPDIR_NFTW_FDS 16 /* the file descriptors tmpdir_remove's walk keeps open */

static inline int tmpdir_remove_one(const char *path, const struct stat *sb, int flag,
                                    struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    if (remove(path) != 0)
        fprintf(stderr, "tmpdir_remove: %s: %s\n", path, strerror(errno));
    return 0; /* go on: remove what can be removed */
}

/* Make the new directory /tmp/<name>-test-XXXXXX, its path into dir (size
 * bytes).  0, or -1 (said on stderr). */
static inline int tmpdir_make(char *dir, size_t size, const char *name)
{
    int n = snprintf(dir, size, "/tmp/%s-test-XXXXXX", name);
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "tmpdir_make: /tmp/%s-test-XXXXXX is longer than %zu bytes\n", name,
                size ? size - 1 : 0);
        return -1;
    }
    if (!mkdtemp(dir)) {
        fprintf(stderr, "tmpdir_make: mkdtemp %s: %s\n", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* Remove dir and everything in it; nothing when dir is NULL or "". */
static inline void tmpdir_remove(const char *dir)
{
    if (dir && dir[0])
        nftw(dir, tmpdir_remove_one, TMPDIR_NFTW_FDS, FTW_DEPTH | FTW_PHYS);
}

/* tmpdir_make, then a store opened in that directory into *st.  0, or -1
 * (said on stderr; the directory is removed again, *st is NULL). */
static inline int tmpstore_open(char *dir, size_t size, const char *name, struct store **st)
{
    *st = NULL;
    if (tmpdir_make(dir, size, name) < 0)
        return -1;
    struct err e;
    err_clear(&e);
    *st = store_open(dir, &e);
    if (!*st) {
        fprintf(stderr, "tmpstore_open: store_open %s: %s\n", dir, e.msg);
        tmpdir_remove(dir);
        return -1;
    }
    return 0;
}

/* Close st (NULL-safe), then remove dir with everything in it. */
static inline void tmpstore_close(const char *dir, struct store *st)
{
    store_close(st);
    tmpdir_remove(dir);
}

/* A test's state directory and the store opened in it, as a cmocka state:
 * tmpstore_setup (a group's or a test's set-up) makes it, tmpstore_teardown
 * takes it away. */
struct tmpstore {
    char dir[TMPDIR_MAX];
    struct store *st;
};

/* *state a new struct tmpstore (tmpstore_open, `name` as there).  0, or -1. */
static inline int tmpstore_setup(void **state, const char *name)
{
    struct tmpstore *ts = calloc(1, sizeof *ts);
    if (!ts || tmpstore_open(ts->dir, sizeof ts->dir, name, &ts->st) < 0) {
        free(ts);
        return -1;
    }
    *state = ts;
    return 0;
}

/* Close and remove what tmpstore_setup made (NULL-safe).  0. */
static inline int tmpstore_teardown(void **state)
{
    struct tmpstore *ts = *state;
    if (ts) {
        tmpstore_close(ts->dir, ts->st);
        free(ts);
    }
    *state = NULL;
    return 0;
}

#endif

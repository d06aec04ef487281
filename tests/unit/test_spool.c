/* Unit tests: spooling bytes in memory, then in an unlinked file
 * (include/spool.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool.h"

static char *read_fd(int fd, size_t size)
{
    char *b = calloc(1, size + 1);
    assert_non_null(b);
    assert_int_equal(pread(fd, b, size, 0), (ssize_t)size);
    return b;
}

static void memory_then_file(void **state)
{
    (void)state;
    struct spool s;
    struct err e;
    spool_init(&s, "/tmp", 10, 0);
    assert_int_equal(spool_write(&s, "hello", 5, &e), 0);
    assert_int_equal(s.fd, -1);
    assert_string_equal(s.mem, "hello");
    assert_int_equal(spool_write(&s, " world!", 7, &e), 0); /* 12 > 10: a file now */
    assert_true(s.fd >= 0);
    assert_null(s.mem);
    assert_int_equal(spool_write(&s, "", 0, &e), 0);
    assert_int_equal(s.size, 12);
    struct stat sb;
    assert_int_equal(fstat(s.fd, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(sb.st_nlink, 0); /* unlinked: nothing left behind */
    struct spool_content c;
    assert_int_equal(spool_take(&s, &c, &e), 0);
    assert_null(c.mem);
    assert_int_equal(c.size, 12);
    char *b = read_fd(c.fd, 12);
    assert_string_equal(b, "hello world!");
    free(b);
    close(c.fd);
    assert_int_equal(s.fd, -1); /* the spool is empty again */
    spool_free(&s);
    spool_free(NULL);
}

static void cap_and_memory_only(void **state)
{
    (void)state;
    struct spool s;
    struct err e;
    spool_init(&s, NULL, 4, 6); /* no directory: memory only, whatever mem_max says */
    assert_int_equal(spool_write(&s, "abcd", 4, &e), 0);
    assert_int_equal(spool_write(&s, "efgh", 4, &e), 0); /* cut at the cap */
    assert_int_equal(spool_write(&s, "ijkl", 4, &e), 0);
    assert_int_equal(s.fd, -1);
    assert_int_equal(s.size, 6);
    struct spool_content c;
    assert_int_equal(spool_take(&s, &c, &e), 0);
    assert_int_equal(c.fd, -1);
    assert_int_equal(c.len, 6);
    assert_string_equal(c.mem, "abcdef");
    free(c.mem);
    spool_init(&s, NULL, 4, 0); /* nothing written: an empty buffer */
    assert_int_equal(spool_take(&s, &c, &e), 0);
    assert_non_null(c.mem);
    assert_int_equal(c.len, 0);
    free(c.mem);
}

static void bad_directory(void **state)
{
    (void)state;
    struct spool s;
    struct err e;
    spool_init(&s, "/nonexistent/spool-dir", 2, 0);
    assert_int_equal(spool_write(&s, "ab", 2, &e), 0);
    assert_int_equal(spool_write(&s, "c", 1, &e), -1);
    assert_int_equal(e.kind, ERR_INTERNAL);
    assert_non_null(strstr(e.msg, "/nonexistent/spool-dir"));
    spool_free(&s);
    assert_int_equal(spool_tmpfile("/nonexistent/spool-dir", &e), -1);
    int fd = spool_tmpfile("/tmp", &e);
    assert_true(fd >= 0);
    assert_int_equal(spool_write_all(fd, "xyz", 3), 0);
    char *b = read_fd(fd, 3);
    assert_string_equal(b, "xyz");
    free(b);
    close(fd);
    assert_int_equal(spool_write_all(fd, "xyz", 3), -1); /* closed */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(memory_then_file),
        cmocka_unit_test(cap_and_memory_only),
        cmocka_unit_test(bad_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

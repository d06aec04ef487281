/* Unit tests: durable Maildir delivery keyed by UIDL (include/maildir.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maildir.h"

static char root[64];

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "/tmp/test_maildir.XXXXXX");
    return mkdtemp(root) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

/* The one file in dir (its name into name), or fail; 0 files: returns 0. */
static int only_file(const char *dir, char *name, size_t size)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') {
            n++;
            snprintf(name, size, "%s", de->d_name);
        }
    closedir(d);
    assert_true(n <= 1);
    return n;
}

static void keys(void **state)
{
    (void)state;
    char k1[MAILDIR_KEY_LEN + 1], k2[MAILDIR_KEY_LEN + 1], k3[MAILDIR_KEY_LEN + 1];
    maildir_key("alice@pop.example", "UID1", k1);
    maildir_key("alice@pop.example", "UID2", k2);
    maildir_key("alice@pop.exampleU", "ID1", k3); /* the NUL keeps the parts apart */
    assert_int_equal(strlen(k1), MAILDIR_KEY_LEN);
    assert_int_equal(strspn(k1, "0123456789abcdef"), MAILDIR_KEY_LEN);
    assert_string_not_equal(k1, k2);
    assert_string_not_equal(k1, k3);
    /* the first MAILDIR_KEY_LEN hex digits of SHA-256(source NUL uidl) */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    static const char in[] = "alice@pop.example\0UID1";
    assert_int_equal(EVP_Digest(in, sizeof in - 1, md, &mdlen, EVP_sha256(), NULL), 1);
    char want[MAILDIR_KEY_LEN + 1];
    for (int i = 0; i < MAILDIR_KEY_LEN / 2; i++)
        snprintf(want + 2 * i, 3, "%02x", md[i]);
    assert_string_equal(k1, want);
}

static void deliver_and_reopen(void **state)
{
    (void)state;
    char path[128], sub[512], name[256], file[1024];
    snprintf(path, sizeof path, "%s/Mail/", root); /* a trailing '/' is fine */
    struct err e;
    err_clear(&e);
    assert_int_equal(mkdir(path, 0700), 0);
    struct maildir *md = maildir_open(path, &e);
    assert_non_null(md);
    char key[MAILDIR_KEY_LEN + 1], other[MAILDIR_KEY_LEN + 1];
    maildir_key("src", "u1", key);
    maildir_key("src", "u2", other);
    assert_false(maildir_has(md, key));
    /* a message in two writes lands in new/, 0600, with its key and size */
    assert_int_equal(maildir_begin(md, key, &e), 0);
    assert_int_equal(maildir_write(md, "Subject: x\r\n\r\n", 14, &e), 0);
    assert_int_equal(maildir_write(md, "body\r\n", 6, &e), 0);
    assert_int_equal(maildir_commit(md, &e), 0);
    assert_int_equal(maildir_sync(md, &e), 0);
    snprintf(sub, sizeof sub, "%s/tmp", path);
    assert_int_equal(only_file(sub, name, sizeof name), 0);
    snprintf(sub, sizeof sub, "%s/new", path);
    assert_int_equal(only_file(sub, name, sizeof name), 1);
    char tail[64];
    snprintf(tail, sizeof tail, ",U=%s,S=20", key);
    assert_non_null(strstr(name, tail));
    snprintf(file, sizeof file, "%s/%s", sub, name);
    struct stat st;
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 20);
    /* an aborted message leaves nothing behind */
    assert_int_equal(maildir_begin(md, other, &e), 0);
    assert_int_equal(maildir_write(md, "partial", 7, &e), 0);
    maildir_abort(md);
    snprintf(sub, sizeof sub, "%s/tmp", path);
    assert_int_equal(only_file(sub, name, sizeof name), 0);
    /* commit with nothing begun is an error, not a crash */
    assert_int_equal(maildir_commit(md, &e), -1);
    assert_int_equal(e.kind, ERR_INTERNAL);
    maildir_close(&md);
    assert_null(md);
    /* reopened: the key is known, wherever a reader moved the file */
    snprintf(sub, sizeof sub, "%s/new/%s", path, name);
    char moved[1024];
    snprintf(moved, sizeof moved, "%s/cur/%s:2,S", path, name);
    assert_int_equal(rename(file, moved), 0);
    md = maildir_open(path, &e);
    assert_non_null(md);
    assert_true(maildir_has(md, key));
    assert_false(maildir_has(md, other));
    maildir_close(&md);
    maildir_close(&md); /* NULL-safe */
}

static void open_fails(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/file", root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    struct err e;
    err_clear(&e);
    assert_null(maildir_open(path, &e)); /* a file, not a directory */
    assert_int_equal(e.kind, ERR_INTERNAL);
    assert_non_null(strstr(e.msg, path));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keys),
        cmocka_unit_test(deliver_and_reopen),
        cmocka_unit_test(open_fails),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* Unit tests: the operator's commands on a bridge's state (include/admin.h):
 * usage, backup and restore of a store, export of an account with nothing
 * stored.  Exports of real mail are tested in tests/integration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "capture.h"
#include "cli.h"
#include "store.h"

static char dir[64], cfg_path[128], state[128];

static int setup(void **state_)
{
    (void)state_;
    snprintf(dir, sizeof dir, "/tmp/test_admin.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/bridge.json", dir);
    FILE *f = fopen(cfg_path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "{ \"state_dir\": \"%s\",\n"
            "  \"accounts\": [ { \"name\": \"a\", \"host\": \"pop.example.com\",\n"
            "                  \"username\": \"u\", \"password_env\": \"TEST_ADMIN_UNSET\" } ] }\n",
            state);
    fclose(f);
    unsetenv("TEST_ADMIN_UNSET"); /* the layout needs no secrets */
    struct err e = {0};
    struct store *st = store_open(state, &e);
    if (!st)
        return -1;
    store_close(st);
    return 0;
}

static int teardown(void **state_)
{
    (void)state_;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void usage(void **state_)
{
    (void)state_;
    char out[4096];
    char *none[] = {"store", NULL};
    char *bogus[] = {"store", "copy", "--config", cfg_path, "x", NULL};
    char *no_cfg[] = {"store", "backup", "out.db", NULL};
    char *no_target[] = {"export", "--config", cfg_path, "a", NULL};
    char *both[] = {"export", "--config", cfg_path, "a", "--maildir", "d", "--mbox", "m", NULL};
    char *bad_cfg[] = {"export", "--config", "/nonexistent.json", "a", "--mbox", "m", NULL};
    assert_int_equal(capture_run(admin_store_main, none, out, sizeof out), CLI_EXIT_USAGE);
    assert_non_null(strstr(out, "pop3bridge: Usage: "));
    assert_int_equal(capture_run(admin_store_main, bogus, out, sizeof out), CLI_EXIT_USAGE);
    assert_int_equal(capture_run(admin_store_main, no_cfg, out, sizeof out), CLI_EXIT_USAGE);
    assert_int_equal(capture_run(admin_export_main, no_target, out, sizeof out), CLI_EXIT_USAGE);
    assert_int_equal(capture_run(admin_export_main, both, out, sizeof out), CLI_EXIT_USAGE);
    assert_int_equal(capture_run(admin_export_main, bad_cfg, out, sizeof out), CLI_EXIT_USAGE);
    assert_non_null(strstr(out, "/nonexistent.json"));
}

static void backup_and_restore(void **state_)
{
    (void)state_;
    char out[4096], copy[160];
    snprintf(copy, sizeof copy, "%s/copy.db", dir);
    char *backup[] = {"store", "backup", "--config", cfg_path, copy, NULL};
    if (capture_run(admin_store_main, backup, out, sizeof out) != 0)
        fail_msg("backup: %s", out);
    assert_non_null(strstr(out, "written to"));
    struct stat st;
    assert_int_equal(stat(copy, &st), 0);
    assert_true(st.st_size > 0);
    assert_int_equal(st.st_mode & 077, 0); /* the state holds mail: 0600 */
    char *restore[] = {"store", "restore", "--config", cfg_path, copy, NULL};
    if (capture_run(admin_store_main, restore, out, sizeof out) != 0)
        fail_msg("restore: %s", out);
    assert_non_null(strstr(out, "restored into"));
    char *missing[] = {"store", "restore", "--config", cfg_path, "/nonexistent.db", NULL};
    assert_int_not_equal(capture_run(admin_store_main, missing, out, sizeof out), 0);
}

static void export_nothing(void **state_)
{
    (void)state_;
    char out[4096], mbox[160];
    snprintf(mbox, sizeof mbox, "%s/a.mbox", dir);
    char *ex[] = {"export", "--config", cfg_path, "a", "--mbox", mbox, NULL};
    if (capture_run(admin_export_main, ex, out, sizeof out) != 0)
        fail_msg("export: %s", out);
    assert_non_null(strstr(out, "exported 0 messages of a"));
    /* an mbox is never overwritten */
    assert_int_not_equal(capture_run(admin_export_main, ex, out, sizeof out), 0);
    char *nobody[] = {"export", "--config", cfg_path, "zz", "--mbox", mbox, NULL};
    assert_int_equal(capture_run(admin_export_main, nobody, out, sizeof out), CLI_EXIT_USAGE);
    assert_non_null(strstr(out, "no account \"zz\""));
}

int main(void)
{
    umask(077); /* the configs and secret files written here are 0600: perms.h refuses others */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(usage),
        cmocka_unit_test(backup_and_restore),
        cmocka_unit_test(export_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

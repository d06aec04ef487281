/* Unit tests: who else may read the configuration, secret files and the
 * state directory (include/perms.h): the rule on modes and groups, then real
 * temporary files with various modes, groups and symlinks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capture.h"
#include "perms.h"

#define NOBODY 65534 /* a uid and gid this test's process is not (checked in setup) */

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_perms.XXXXXX");
    perms_allow_insecure(false);
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A file with mode `mode` in dir, holding a secret-looking line; its path. */
static const char *put(const char *name, mode_t mode)
{
    static char path[8][128];
    static int slot;
    char *p = path[slot++ % 8];
    snprintf(p, sizeof path[0], "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("s3cr3t-value\n", f);
    fclose(f);
    assert_int_equal(chmod(p, mode), 0);
    return p;
}

/* ---- the rule ------------------------------------------------------------- */

static const char *judge(mode_t mode, bool dir_kind, enum perms_kind kind, uid_t owner, gid_t group,
                         const struct perms_ids *who, mode_t *fixed)
{
    struct stat st = {0};
    st.st_mode = (dir_kind ? S_IFDIR : S_IFREG) | mode;
    st.st_uid = owner;
    st.st_gid = group;
    return perms_judge(&st, kind, who, fixed);
}

static void rule_files(void **state)
{
    (void)state;
    const gid_t mine[] = {1000, 27};
    const struct perms_ids user = {.euid = 1000, .groups = mine, .ngroups = 2};
    static const struct {
        mode_t mode;
        gid_t group;
        const char *want; /* NULL: accepted */
        mode_t fixed;
    } cases[] = {
        {0600, 1000, NULL, 0600},
        {0400, 1000, NULL, 0400},
        {0640, 1000, NULL, 0640},  /* our effective group */
        {0640, 27, NULL, 0640},    /* a supplementary group */
        {0440, 27, NULL, 0440},
        {0640, 50, "is readable by its group, which this process is not in", 0600},
        {0644, 1000, "is readable by every user", 0640},
        {0644, 50, "is readable by every user", 0600},
        {0604, 1000, "is readable by every user", 0600},
        {0620, 1000, "is writable by its group", 0600},
        {0660, 1000, "is writable by its group", 0640},
        {0602, 1000, "is writable by every user", 0600},
        {0666, 50, "is writable by every user", 0600},
        {0700, 1000, NULL, 0700},
        {0610, 50, NULL, 0600},    /* execute only: nothing to read */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mode_t fixed = 0;
        const char *got = judge(cases[i].mode, false, PERMS_SECRET, 1000, cases[i].group, &user, &fixed);
        if (cases[i].want ? !got || strcmp(got, cases[i].want) != 0 : got != NULL)
            fail_msg("mode %04o group %u: got \"%s\", want \"%s\"", (unsigned)cases[i].mode,
                     (unsigned)cases[i].group, got ? got : "(accepted)",
                     cases[i].want ? cases[i].want : "(accepted)");
        if (got && fixed != cases[i].fixed)
            fail_msg("mode %04o group %u: fix %04o, want %04o", (unsigned)cases[i].mode,
                     (unsigned)cases[i].group, (unsigned)fixed, (unsigned)cases[i].fixed);
        /* the configuration file follows the same rule */
        const char *cfg = judge(cases[i].mode, false, PERMS_CONFIG, 1000, cases[i].group, &user, &fixed);
        assert_true((cfg == NULL) == (got == NULL));
    }
}

static void rule_root_and_credentials(void **state)
{
    (void)state;
    const gid_t rootg[] = {0};
    const struct perms_ids root = {.euid = 0, .groups = rootg, .ngroups = 1};
    const gid_t svc[] = {NOBODY};
    const struct perms_ids service = {.euid = NOBODY, .groups = svc, .ngroups = 1};
    mode_t fixed;
    /* root reads 0640 root:pop3bridge (the packaged layout, checked by the admin) */
    assert_null(judge(0640, false, PERMS_CONFIG, 0, 120, &root, &fixed));
    /* ... but not a group grant on someone else's file, nor world access */
    assert_non_null(judge(0640, false, PERMS_CONFIG, 1000, 120, &root, &fixed));
    assert_non_null(judge(0644, false, PERMS_CONFIG, 0, 120, &root, &fixed));
    assert_int_equal(fixed, 0640);
    /* the service user reads 0640 root:<its group> */
    assert_null(judge(0640, false, PERMS_CONFIG, 0, NOBODY, &service, &fixed));
    assert_non_null(judge(0640, false, PERMS_SECRET, 0, 120, &service, &fixed));
    /* systemd credentials: 0400 / 0440 whatever the group (root with an ACL) */
    assert_null(judge(0400, false, PERMS_CREDENTIAL, 0, 0, &service, &fixed));
    assert_null(judge(0440, false, PERMS_CREDENTIAL, 0, 0, &service, &fixed));
    assert_string_equal(judge(0444, false, PERMS_CREDENTIAL, 0, 0, &service, &fixed),
                        "is readable by every user");
    assert_string_equal(judge(0460, false, PERMS_CREDENTIAL, 0, 0, &service, &fixed),
                        "is writable by its group");
}

static void rule_state_dir(void **state)
{
    (void)state;
    const gid_t mine[] = {1000};
    const struct perms_ids user = {.euid = 1000, .groups = mine, .ngroups = 1};
    mode_t fixed;
    assert_null(judge(0700, true, PERMS_STATE_DIR, 1000, 1000, &user, &fixed));
    assert_string_equal(judge(0755, true, PERMS_STATE_DIR, 1000, 1000, &user, &fixed),
                        "is open to every user, and it holds the mail");
    assert_int_equal(fixed, 0700);
    /* even our own group: the mail is for the service's user only */
    assert_string_equal(judge(0750, true, PERMS_STATE_DIR, 1000, 1000, &user, &fixed),
                        "is open to its group, and it holds the mail");
    assert_non_null(judge(0710, true, PERMS_STATE_DIR, 1000, 1000, &user, &fixed));
    assert_non_null(judge(0701, true, PERMS_STATE_DIR, 1000, 1000, &user, &fixed));
    assert_int_equal(fixed, 0700);
}

/* ---- real files ------------------------------------------------------------- */

static void files_refused_with_one_line(void **state)
{
    (void)state;
    char why[PERMS_WHY_MAX];
    assert_int_equal(perms_check(put("ok", 0600), PERMS_SECRET, why, sizeof why), 0);
    assert_int_equal(perms_check(put("ro", 0400), PERMS_CONFIG, why, sizeof why), 0);

    const char *p = put("world", 0644);
    why[0] = '\0';
    assert_int_equal(perms_check(p, PERMS_SECRET, why, sizeof why), -1);
    char want[256];
    snprintf(want, sizeof want, "%s is readable by every user (mode 0644, owner ", p);
    assert_true(strncmp(why, want, strlen(want)) == 0);
    /* our own group (or root's own file) keeps its read access */
    snprintf(want, sizeof want, ": chmod 640 %s, or accept it with " PERMS_OPTION, p);
    if (!strstr(why, want))
        fail_msg("no \"%s\" in \"%s\"", want, why);
    assert_null(strchr(why, '\n'));
    assert_null(strstr(why, "s3cr3t"));

    p = put("gw", 0620);
    assert_int_equal(perms_check(p, PERMS_CONFIG, why, sizeof why), -1);
    assert_non_null(strstr(why, "is writable by its group (mode 0620"));

    /* missing, or not a regular file: the reader says so */
    char missing[128];
    snprintf(missing, sizeof missing, "%s/none", dir);
    assert_int_equal(perms_check(missing, PERMS_SECRET, why, sizeof why), 0);
    assert_int_equal(perms_check(dir, PERMS_SECRET, why, sizeof why), 0);
}

/* g+r is fine when the file's group is one of ours, refused for another. */
static void group_of_the_process(void **state)
{
    (void)state;
    char why[PERMS_WHY_MAX];
    const char *p = put("mygroup", 0640);
    assert_int_equal(chown(p, (uid_t)-1, getegid()), 0);
    assert_int_equal(perms_check(p, PERMS_SECRET, why, sizeof why), 0);

    gid_t groups[256];
    int n = getgroups(256, groups);
    for (int i = 0; i < n; i++)
        if (groups[i] == NOBODY)
            skip();
    if (geteuid() != 0 || getegid() == NOBODY)
        skip(); /* only root can give a file a group it is not in */
    /* someone else's file (root's own grant would be accepted) in a foreign group */
    p = put("foreign", 0640);
    assert_int_equal(chown(p, NOBODY, NOBODY), 0);
    assert_int_equal(perms_check(p, PERMS_SECRET, why, sizeof why), -1);
    assert_non_null(strstr(why, "is readable by its group, which this process is not in (mode 0640"));
    assert_non_null(strstr(why, ": chmod 600 "));
    /* a systemd credential may be 0440 in any group */
    assert_int_equal(perms_check(p, PERMS_CREDENTIAL, why, sizeof why), 0);
}

static void symlink_target_checked(void **state)
{
    (void)state;
    char why[PERMS_WHY_MAX], link[128];
    const char *target = put("target", 0666);
    snprintf(link, sizeof link, "%s/link", dir);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(perms_check(link, PERMS_CONFIG, why, sizeof why), -1);
    char want[300];
    snprintf(want, sizeof want, "%s (a symlink; its target %s is checked) is writable by every user",
             link, target);
    if (strncmp(why, want, strlen(want)) != 0)
        fail_msg("\"%s\" does not start with \"%s\"", why, want);
    snprintf(want, sizeof want, "chmod 640 %s,", target);
    assert_non_null(strstr(why, want));
    assert_int_equal(chmod(target, 0600), 0);
    assert_int_equal(perms_check(link, PERMS_CONFIG, why, sizeof why), 0);
}

static void state_dir(void **state)
{
    (void)state;
    char why[PERMS_WHY_MAX], sd[128];
    snprintf(sd, sizeof sd, "%s/state", dir);
    assert_int_equal(mkdir(sd, 0700), 0);
    assert_int_equal(perms_check(sd, PERMS_STATE_DIR, why, sizeof why), 0);
    assert_int_equal(chmod(sd, 0755), 0);
    assert_int_equal(perms_check(sd, PERMS_STATE_DIR, why, sizeof why), -1);
    char want[300];
    snprintf(want, sizeof want, "%s is open to every user, and it holds the mail (mode 0755, owner ",
             sd);
    assert_true(strncmp(why, want, strlen(want)) == 0);
    snprintf(want, sizeof want, ": chmod 700 %s, or accept", sd);
    assert_non_null(strstr(why, want));
    /* a file where a directory is expected: the store reports that */
    assert_int_equal(perms_check(put("notadir", 0644), PERMS_STATE_DIR, why, sizeof why), 0);
}

static const char *override_path;

static int check_one(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    char why[PERMS_WHY_MAX] = "";
    int rc = perms_check(override_path, PERMS_SECRET, why, sizeof why);
    fputs(why, stdout); /* empty when accepted */
    return rc;
}

static void override_warns(void **state)
{
    (void)state;
    override_path = put("insecure", 0644);
    char *argv[] = {(char *)"check", NULL};
    char out[4096];
    perms_allow_insecure(true);
    assert_true(perms_insecure_allowed());
    int rc = capture_run(check_one, argv, out, sizeof out);
    perms_allow_insecure(false);
    assert_int_equal(rc, 0);
    /* one warning line naming the file, its mode and the fix; no content */
    assert_non_null(strstr(out, "level=warn event=insecure_permissions path="));
    assert_non_null(strstr(out, override_path));
    assert_non_null(strstr(out, "problem=\"is readable by every user\" mode=0644"));
    assert_non_null(strstr(out, "fix=\"chmod "));
    assert_non_null(strstr(out, "accepted_with=" PERMS_OPTION));
    assert_null(strstr(out, "s3cr3t"));
    assert_non_null(strchr(out, '\n'));
    assert_null(strchr(strchr(out, '\n') + 1, '\n'));
    /* and refused again without it */
    rc = capture_run(check_one, argv, out, sizeof out);
    assert_int_equal(rc, -1);
    assert_null(strstr(out, "level=warn"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rule_files),
        cmocka_unit_test(rule_root_and_credentials),
        cmocka_unit_test(rule_state_dir),
        cmocka_unit_test_setup_teardown(files_refused_with_one_line, setup, teardown),
        cmocka_unit_test_setup_teardown(group_of_the_process, setup, teardown),
        cmocka_unit_test_setup_teardown(symlink_target_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(state_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(override_warns, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

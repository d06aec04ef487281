/* perms — refuse files other users can read (see include/perms.h). */
#include "perms.h"

#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define PERMS_NAME_MAX 64    /* a user or group name in a message (longer: cut) */
#define PERMS_NSS_BUF 16384  /* getpwuid_r / getgrgid_r scratch buffer */

static atomic_bool allow_insecure;

void perms_allow_insecure(bool allow)
{
    atomic_store(&allow_insecure, allow);
}

bool perms_insecure_allowed(void)
{
    return atomic_load(&allow_insecure);
}

static bool in_groups(gid_t g, const struct perms_ids *who)
{
    for (size_t i = 0; i < who->ngroups; i++)
        if (who->groups[i] == g)
            return true;
    return false;
}

const char *perms_judge(const struct stat *st, enum perms_kind kind, const struct perms_ids *who,
                        mode_t *fixed)
{
    mode_t m = st->st_mode & 07777;
    if (kind == PERMS_STATE_DIR) {
        *fixed = m & ~(mode_t)077;
        if (m & S_IRWXO)
            return "is open to every user, and it holds the mail";
        if (m & S_IRWXG)
            return "is open to its group, and it holds the mail";
        return NULL;
    }
    /* the group may keep read access when it is ours (or root's own grant) */
    bool group_ok = kind == PERMS_CREDENTIAL || in_groups(st->st_gid, who) ||
                    (who->euid == 0 && st->st_uid == 0);
    *fixed = m & ~(mode_t)(S_IRWXO | S_IWGRP | (group_ok ? 0 : S_IRWXG));
    if (m & S_IWOTH)
        return "is writable by every user";
    if (m & S_IWGRP)
        return "is writable by its group";
    if (m & S_IROTH)
        return "is readable by every user";
    if ((m & S_IRGRP) && !group_ok)
        return "is readable by its group, which this process is not in";
    return NULL;
}

static void user_name(uid_t uid, char *out, size_t size)
{
    struct passwd pw, *res = NULL;
    char *buf = malloc(PERMS_NSS_BUF);
    if (buf && getpwuid_r(uid, &pw, buf, PERMS_NSS_BUF, &res) == 0 && res)
        snprintf(out, size, "%.*s", PERMS_NAME_MAX, res->pw_name);
    else
        snprintf(out, size, "%lu", (unsigned long)uid);
    free(buf);
}

static void group_name(gid_t gid, char *out, size_t size)
{
    struct group gr, *res = NULL;
    char *buf = malloc(PERMS_NSS_BUF);
    if (buf && getgrgid_r(gid, &gr, buf, PERMS_NSS_BUF, &res) == 0 && res)
        snprintf(out, size, "%.*s", PERMS_NAME_MAX, res->gr_name);
    else
        snprintf(out, size, "%lu", (unsigned long)gid);
    free(buf);
}

/* This process's effective gid and supplementary groups (malloc'd); NULL
 * when out of memory. */
static gid_t *own_groups(size_t *n)
{
    int k = getgroups(0, NULL);
    if (k < 0)
        k = 0;
    gid_t *g = malloc(((size_t)k + 1) * sizeof *g);
    if (!g)
        return NULL;
    int got = k > 0 ? getgroups(k, g + 1) : 0;
    g[0] = getegid();
    *n = 1 + (size_t)(got > 0 ? got : 0);
    return g;
}

int perms_check(const char *path, enum perms_kind kind, char *why, size_t why_size)
{
    struct stat lst, st;
    if (lstat(path, &lst) < 0)
        return 0; /* missing: the reader says so */
    bool link = S_ISLNK(lst.st_mode);
    if (link && stat(path, &st) < 0)
        return 0;
    if (!link)
        st = lst;
    if (kind == PERMS_STATE_DIR ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
        return 0;

    size_t ngroups = 0;
    gid_t *groups = own_groups(&ngroups);
    struct perms_ids who = {.euid = geteuid(), .groups = groups, .ngroups = groups ? ngroups : 0};
    mode_t fixed = 0;
    const char *what = perms_judge(&st, kind, &who, &fixed);
    free(groups);
    if (!what)
        return 0;

    char user[PERMS_NAME_MAX + 1], group[PERMS_NAME_MAX + 1], me[PERMS_NAME_MAX + 1];
    user_name(st.st_uid, user, sizeof user);
    group_name(st.st_gid, group, sizeof group);
    /* without its world/group bits, can we still read it?  Else say chown too. */
    bool keeps_group = (fixed & S_IRGRP) != 0;
    bool readable = who.euid == 0 || st.st_uid == who.euid || keeps_group;
    char target[PATH_MAX] = "", as_link[PATH_MAX + 64] = "";
    if (link) {
        if (realpath(path, target))
            snprintf(as_link, sizeof as_link, " (a symlink; its target %.*s is checked)",
                     PATH_MAX - 1, target);
        else
            snprintf(as_link, sizeof as_link, " (a symlink; its target is checked)");
    }
    const char *fix_path = link && target[0] ? target : path;
    char fix[PATH_MAX + PERMS_NAME_MAX + 48];
    if (readable) {
        snprintf(fix, sizeof fix, "chmod %o %s", (unsigned)fixed, fix_path);
    } else {
        user_name(who.euid, me, sizeof me);
        snprintf(fix, sizeof fix, "chown %s %s and chmod %o it", me, fix_path, (unsigned)fixed);
    }
    if (perms_insecure_allowed()) {
        char mode[8], owner[2 * PERMS_NAME_MAX + 2];
        snprintf(mode, sizeof mode, "%04o", (unsigned)(st.st_mode & 07777));
        snprintf(owner, sizeof owner, "%s:%s", user, group);
        /* three log_q() values: fewer than LOG_Q_SLOTS; owner names have no spaces */
        log_warn("insecure_permissions", "path=%s problem=%s mode=%s owner=%s link=%s fix=%s "
                 "accepted_with=%s", log_q(path), log_q(what), mode, owner, link ? "yes" : "no",
                 log_q(fix), PERMS_OPTION);
        return 0;
    }
    snprintf(why, why_size, "%s%s %s (mode %04o, owner %s:%s): %s, or accept it with %s", path,
             as_link, what, (unsigned)(st.st_mode & 07777), user, group, fix, PERMS_OPTION);
    return -1;
}

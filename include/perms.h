/*
 * perms — who else may read the files the bridge trusts: the configuration
 * file, the files secrets come from (every *_file secret, the webhook's
 * mutual-TLS client key) and the state directory that holds the mail.
 *
 * The rule (the mode bits of the file itself; for a symbolic link, of its
 * target: stat(2), and the message says it was a link):
 *   - a file (PERMS_CONFIG, PERMS_SECRET) is refused when it is readable by
 *     every user (o+r), or writable by its group or by every user (g+w,
 *     o+w).  Readable by its group (g+r) is accepted only when that group is
 *     one of this process's groups (effective gid or a supplementary group):
 *     the packaged layout, /etc/pop3bridge 0750 root:pop3bridge with files
 *     0640 root:pop3bridge read by the service's user.  One more case: a
 *     process running as root accepts g+r on a file root owns (root granted
 *     that group itself; `check-config` run by the administrator on the
 *     packaged layout);
 *   - PERMS_CREDENTIAL, a file systemd passes in $CREDENTIALS_DIRECTORY: the
 *     same, except that g+r is always accepted (systemd makes them 0400 or
 *     0440, owned by the service's user or by root with an ACL);
 *   - an existing state directory (PERMS_STATE_DIR) is refused when its
 *     group or other users have any access (mode & 077): the bridge makes it
 *     0700 when it creates it.
 * A path that does not exist, or that is not a regular file (a directory for
 * PERMS_STATE_DIR), passes: whoever opens it reports that.  Only the mode,
 * owner and group are looked at, not ACLs.
 *
 * A refusal is one line that names the file, what is wrong, its mode and
 * owner, and the fix, e.g.
 *   /etc/b/config.json is readable by every user (mode 0644, owner root:root):
 *   chmod 600 /etc/b/config.json, or accept it with --allow-insecure-permissions
 * Once perms_allow_insecure(true) (the command line's
 * --allow-insecure-permissions), the same finding is logged as one warning
 * (event insecure_permissions, log.h) and the file is accepted.  Nothing in
 * a message comes from a file's content.
 *
 * Thread-safety: perms_allow_insecure() is called once at start, before any
 * thread; the checks are thread-safe.
 */
#ifndef POP3BRIDGE_PERMS_H
#define POP3BRIDGE_PERMS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#define PERMS_OPTION "--allow-insecure-permissions" /* the override on the command line */
#define PERMS_WHY_MAX 4608 /* a `why` buffer that always fits (two paths + text) */

enum perms_kind {
    PERMS_CONFIG,     /* the configuration file */
    PERMS_SECRET,     /* a file holding a secret (a *_file key, a TLS client key) */
    PERMS_CREDENTIAL, /* a secret from $CREDENTIALS_DIRECTORY (systemd LoadCredential=) */
    PERMS_STATE_DIR,  /* the state directory */
};

/* Who asks: the effective uid and the groups it is in (effective gid and
 * supplementary groups; borrowed). */
struct perms_ids {
    uid_t euid;
    const gid_t *groups;
    size_t ngroups;
};

/* Downgrade refusals to warnings (true) or not (false, the default). */
void perms_allow_insecure(bool allow);
bool perms_insecure_allowed(void);

/* The rule alone, on st (from stat(2)) for a process `who`.  NULL when the
 * mode is fine; else what is wrong ("is readable by every user", a static
 * string) with *fixed set to the mode to give it (e.g. 0600, 0640, 0700). */
const char *perms_judge(const struct stat *st, enum perms_kind kind, const struct perms_ids *who,
                        mode_t *fixed);

/* Check the file at path for this process (its euid and groups).  0 when it
 * is fine, does not exist or is not of the kind checked, or when it is not
 * fine but insecure permissions are allowed (then one warning is logged);
 * -1 with the refusal in why (PERMS_WHY_MAX bytes always fit). */
int perms_check(const char *path, enum perms_kind kind, char *why, size_t why_size);

#endif

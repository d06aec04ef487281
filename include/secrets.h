/*
 * secrets — reading one secret from where the configuration says it is:
 *   - an environment variable (its whole value, which must be one line);
 *   - a file, read up to SECRETS_MAX + 2 bytes, first line kept.  A path
 *     "${CREDENTIALS_DIRECTORY}/NAME" (or "$CREDENTIALS_DIRECTORY/NAME") names
 *     a credential systemd passes with LoadCredential=, looked up in the
 *     directory that variable names when the secret is read.  A file other
 *     users may read is refused first (perms.h: PERMS_SECRET, or
 *     PERMS_CREDENTIAL for a credential), unless that is allowed;
 *   - a command, run as `/bin/sh -c COMMAND` in its own process group, stdin
 *     /dev/null, the signal mask and SIGPIPE reset, first line of its stdout
 *     kept; it must exit 0 within its timeout and print at most
 *     SECRETS_OUTPUT_MAX bytes, else it is killed (the whole group).
 * A secret is the first line without its CR/LF: not empty, at most
 * SECRETS_MAX bytes, no control characters; or, for secrets of several lines
 * (multiline), the whole text without its trailing line breaks.
 *
 * Who owns what: a value comes back malloc'd; wipe and free it with
 * secrets_free().  Every buffer that held secret bytes on the way is wiped.
 * No call logs anything, and no error text holds a secret's bytes (only
 * variable names, paths and the command's fate).
 *
 * Errors: -1 with `why` (a sentence fragment without the key's name, e.g.
 * "environment variable X is not set", "cannot open /p: No such file",
 * "the command timed out"), for the caller to prefix with the key.
 * Thread-safe apart from getenv(3).
 */
#ifndef POP3BRIDGE_SECRETS_H
#define POP3BRIDGE_SECRETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SECRETS_MAX 8192                 /* bytes of one secret */
#define SECRETS_OUTPUT_MAX 65536         /* bytes a command may print */
#define SECRETS_COMMAND_TIMEOUT_MS 10000 /* a command's deadline when none is given */
#define SECRETS_WHY_MAX 4352             /* a `why` buffer that always fits (PATH_MAX + text) */

enum secrets_source {
    SECRETS_ENV = 1, /* ref: the variable's name */
    SECRETS_FILE,    /* ref: an absolute path or a credential reference */
    SECRETS_COMMAND, /* ref: a shell command */
};

struct secrets_req {
    enum secrets_source source;
    const char *ref;
    const char *cwd;    /* a command's working directory; NULL: ours */
    int64_t timeout_ms; /* a command's deadline; <= 0: SECRETS_COMMAND_TIMEOUT_MS */
    bool multiline;     /* keep every line (trailing line breaks removed; TAB, CR and
                           LF the only control characters allowed), not the first */
};

/* Read the secret r names.  0 with *value (malloc'd, NUL-terminated) and
 * *len, or -1 with why (*value NULL). */
int secrets_read(const struct secrets_req *r, char **value, size_t *len, char *why,
                 size_t why_size);

/* Wipe and free a value from secrets_read(); sets *value to NULL.  NULL-safe. */
void secrets_free(char **value, size_t len);

/* The length of a "${CREDENTIALS_DIRECTORY}/" or "$CREDENTIALS_DIRECTORY/"
 * prefix followed by a name, or 0 for any other path. */
size_t secrets_credential_prefix(const char *path);

/* The file a SECRETS_FILE ref is read from: the credential expanded into buf
 * (size bytes), or ref itself.  NULL with why when CREDENTIALS_DIRECTORY is
 * not set or not absolute, or the expanded path does not fit. */
const char *secrets_file_path(const char *ref, char *buf, size_t size, char *why, size_t why_size);

/* Read at most cap bytes of the file at path into buf (not NUL-terminated).
 * 0 with *n; -1 when it cannot be opened, -3 when reading fails (errno set
 * for both); -2 when regular_only and it is not a regular file. */
int secrets_read_file(const char *path, bool regular_only, char *buf, size_t cap, size_t *n);

/* Run cmd as above and collect its stdout into out (SECRETS_OUTPUT_MAX bytes
 * at least).  0 with *out_len, or -1 with why ("timed out", "exited with
 * status 3", "was killed by signal 9", "printed more than ...", "cannot
 * start it: ..."); out is wiped on failure. */
int secrets_run_command(const char *cmd, const char *cwd, int64_t timeout_ms, char *out,
                        size_t *out_len, char *why, size_t why_size);

#endif

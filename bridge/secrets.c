/* secrets — environment, file and command secrets; see include/secrets.h. */
#include "secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "perms.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define WAIT_STEP_MS 10   /* how often a finished command's exit is looked for */
#define POLL_STEP_MS 1000 /* the longest single wait for a command's output */

void secrets_free(char **value, size_t len)
{
    if (value && *value) {
        OPENSSL_cleanse(*value, len);
        free(*value);
        *value = NULL;
    }
}

/* ---- the first line ----------------------------------------------------------- */

enum line_result { LINE_OK, LINE_EMPTY, LINE_TOO_LONG, LINE_NOMEM, LINE_CONTROL };

static const char *const line_problem[] = {
    [LINE_OK] = "",
    [LINE_EMPTY] = "is empty",
    [LINE_TOO_LONG] = "is longer than SECRETS_MAX (8192) bytes",
    [LINE_NOMEM] = "out of memory",
    [LINE_CONTROL] = "contains a control character",
};

_Static_assert(SECRETS_MAX == 8192, "the text above names the limit");

/* Keep the first line of buf[0..n) (without CR/LF) as the secret. */
static enum line_result first_line(const char *buf, size_t n, char **value, size_t *len)
{
    size_t k = 0;
    while (k < n && buf[k] != '\n' && buf[k] != '\0')
        k++;
    if (k > 0 && buf[k - 1] == '\r')
        k--;
    if (k == 0)
        return LINE_EMPTY;
    if (k > SECRETS_MAX)
        return LINE_TOO_LONG;
    for (size_t i = 0; i < k; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
            return LINE_CONTROL;
    char *v = malloc(k + 1);
    if (!v)
        return LINE_NOMEM;
    memcpy(v, buf, k);
    v[k] = '\0';
    *value = v;
    *len = k;
    return LINE_OK;
}

/* Keep all of buf[0..n) (trailing line breaks removed) as the secret: for
 * secrets of several lines.  TAB, CR and LF are the only control characters
 * allowed. */
static enum line_result all_lines(const char *buf, size_t n, char **value, size_t *len)
{
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0)
        return LINE_EMPTY;
    if (n > SECRETS_MAX)
        return LINE_TOO_LONG;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if ((ch < 0x20 && ch != '\t' && ch != '\r' && ch != '\n') || ch == 0x7f)
            return LINE_CONTROL;
    }
    char *v = malloc(n + 1);
    if (!v)
        return LINE_NOMEM;
    memcpy(v, buf, n);
    v[n] = '\0';
    *value = v;
    *len = n;
    return LINE_OK;
}

static enum line_result take(bool multiline, const char *buf, size_t n, char **value, size_t *len)
{
    return multiline ? all_lines(buf, n, value, len) : first_line(buf, n, value, len);
}

/* ---- files and credentials ------------------------------------------------------- */

size_t secrets_credential_prefix(const char *p)
{
    static const char *const forms[] = {"${CREDENTIALS_DIRECTORY}/", "$CREDENTIALS_DIRECTORY/"};
    for (size_t i = 0; p && i < COUNT(forms); i++)
        if (strncmp(p, forms[i], strlen(forms[i])) == 0 && p[strlen(forms[i])])
            return strlen(forms[i]);
    return 0;
}

const char *secrets_file_path(const char *ref, char *buf, size_t size, char *why, size_t why_size)
{
    size_t n = secrets_credential_prefix(ref);
    if (!n)
        return ref;
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (!dir || dir[0] != '/') {
        snprintf(why, why_size, "%s",
                 dir ? "CREDENTIALS_DIRECTORY is not an absolute path"
                     : "CREDENTIALS_DIRECTORY is not set (systemd sets it"
                       " for a service with LoadCredential=)");
        return NULL;
    }
    int r = snprintf(buf, size, "%s/%s", dir, ref + n);
    if (r < 0 || (size_t)r >= size) {
        snprintf(why, why_size, "the path is longer than PATH_MAX (%d) once expanded", PATH_MAX);
        return NULL;
    }
    return buf;
}

int secrets_read_file(const char *path, bool regular_only, char *buf, size_t cap, size_t *n)
{
    *n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    struct stat st;
    if (regular_only && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        return -2;
    }
    int rc = 0;
    while (*n < cap) {
        ssize_t got = read(fd, buf + *n, cap - *n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = -3;
            break;
        }
        if (got == 0)
            break;
        *n += (size_t)got;
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* ---- commands ------------------------------------------------------------------- */

/* Fork `sh -c cmd` with stdout into a pipe.  The pid, or -1 with why. */
static pid_t spawn(const char *cmd, const char *cwd, int *out_fd, char *why, size_t why_size)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        snprintf(why, why_size, "cannot create a pipe: %s", strerror(errno));
        return -1;
    }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    char *const argv[] = {"sh", "-c", (char *)cmd, NULL};
    pid_t pid = devnull < 0 ? -1 : fork();
    if (pid == 0) {
        sigset_t none;
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        sigaction(SIGPIPE, &dfl, NULL);
        setpgid(0, 0);
        if (dup2(devnull, 0) < 0 || dup2(p[1], 1) < 0 || (cwd && chdir(cwd) < 0))
            _exit(126);
        execve("/bin/sh", argv, environ);
        _exit(127);
    }
    int saved = errno;
    close(p[1]);
    if (devnull >= 0)
        close(devnull);
    if (pid < 0) {
        close(p[0]);
        snprintf(why, why_size, "cannot start it: %s", strerror(saved));
        return -1;
    }
    setpgid(pid, pid); /* also here: whichever runs first */
    *out_fd = p[0];
    return pid;
}

/* Read the command's stdout until EOF or the deadline.  NULL, or what failed. */
static const char *collect(int fd, int64_t deadline, char *out, size_t *n)
{
    for (;;) {
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0)
            return "timed out";
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, (int)(left > POLL_STEP_MS ? POLL_STEP_MS : left));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return "poll failed";
        if (r == 0)
            continue;
        char chunk[4096];
        ssize_t got = read(fd, chunk, sizeof chunk);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return NULL; /* EOF (or error): the command closed its output */
        if (*n + (size_t)got > SECRETS_OUTPUT_MAX) {
            OPENSSL_cleanse(chunk, sizeof chunk);
            return "printed more than SECRETS_OUTPUT_MAX (65536) bytes";
        }
        memcpy(out + *n, chunk, (size_t)got);
        *n += (size_t)got;
        OPENSSL_cleanse(chunk, sizeof chunk);
    }
}

_Static_assert(SECRETS_OUTPUT_MAX == 65536, "the text above names the limit");

/* Wait for the command's exit, still within the deadline; on failure kill
 * its group.  NULL with *status, or what failed. */
static const char *reap(pid_t pid, int64_t deadline, const char *fail, int *status)
{
    pid_t w = 0;
    while (!fail && (w = waitpid(pid, status, WNOHANG)) == 0) {
        if (clock_mono_ms() >= deadline) {
            fail = "timed out";
            break;
        }
        struct timespec ts = {0, WAIT_STEP_MS * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (fail || w < 0) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        while (waitpid(pid, status, 0) < 0 && errno == EINTR)
            ;
        return fail ? fail : "could not be waited for";
    }
    return NULL;
}

int secrets_run_command(const char *cmd, const char *cwd, int64_t timeout_ms, char *out,
                        size_t *out_len, char *why, size_t why_size)
{
    int fd = -1;
    pid_t pid = spawn(cmd, cwd, &fd, why, why_size);
    if (pid < 0)
        return -1;
    int64_t deadline = clock_mono_ms() + timeout_ms;
    size_t n = 0;
    const char *fail = collect(fd, deadline, out, &n);
    close(fd);
    int status = 0;
    fail = reap(pid, deadline, fail, &status);
    if (fail)
        snprintf(why, why_size, "%s", fail);
    else if (WIFSIGNALED(status))
        snprintf(why, why_size, "was killed by signal %d", WTERMSIG(status));
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        snprintf(why, why_size, "exited with status %d",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    else {
        *out_len = n;
        return 0;
    }
    OPENSSL_cleanse(out, n);
    return -1;
}

/* ---- one secret ------------------------------------------------------------------- */

static int from_env(const char *name, bool multiline, char **value, size_t *len, char *why,
                    size_t why_size)
{
    const char *v = getenv(name);
    if (!v) {
        snprintf(why, why_size, "environment variable %s is not set", name);
        return -1;
    }
    size_t vl = strlen(v);
    enum line_result r = take(multiline, v, vl, value, len);
    if (r == LINE_OK && !multiline && *len != vl) { /* more than one line */
        secrets_free(value, *len);
        *len = 0;
        r = LINE_CONTROL;
    }
    if (r == LINE_OK)
        return 0;
    snprintf(why, why_size, "environment variable %s %s", name, line_problem[r]);
    return -1;
}

static int from_file(const char *ref, bool multiline, char *buf, char **value, size_t *len,
                     char *why, size_t why_size)
{
    char cred[PATH_MAX];
    const char *file = secrets_file_path(ref, cred, sizeof cred, why, why_size);
    if (!file)
        return -1;
    if (perms_check(file, secrets_credential_prefix(ref) ? PERMS_CREDENTIAL : PERMS_SECRET, why,
                    why_size) < 0)
        return -1;
    size_t n = 0;
    int rc = secrets_read_file(file, true, buf, SECRETS_MAX + 2, &n);
    if (rc == -2) {
        snprintf(why, why_size, "%s is not a regular file", file);
        return -1;
    }
    if (rc < 0) {
        snprintf(why, why_size, "cannot %s %s: %s", rc == -1 ? "open" : "read", file,
                 strerror(errno));
        return -1;
    }
    enum line_result r = take(multiline, buf, n, value, len);
    if (r == LINE_OK)
        return 0;
    snprintf(why, why_size, "the file %s %s", file, line_problem[r]);
    return -1;
}

static int from_command(const struct secrets_req *q, char *buf, char **value, size_t *len,
                        char *why, size_t why_size)
{
    int64_t t = q->timeout_ms > 0 ? q->timeout_ms : SECRETS_COMMAND_TIMEOUT_MS;
    size_t n = 0;
    char fail[160];
    if (secrets_run_command(q->ref, q->cwd, t, buf, &n, fail, sizeof fail) < 0) {
        snprintf(why, why_size, "the command %s", fail);
        return -1;
    }
    enum line_result r = take(q->multiline, buf, n, value, len);
    if (r == LINE_OK)
        return 0;
    snprintf(why, why_size, "the command's output %s",
             r == LINE_EMPTY ? "has an empty first line" : line_problem[r]);
    return -1;
}

int secrets_read(const struct secrets_req *q, char **value, size_t *len, char *why,
                 size_t why_size)
{
    *value = NULL;
    *len = 0;
    if (why_size)
        why[0] = '\0';
    if (!q->ref) {
        snprintf(why, why_size, "no source is named");
        return -1;
    }
    if (q->source == SECRETS_ENV)
        return from_env(q->ref, q->multiline, value, len, why, why_size);
    if (q->source != SECRETS_FILE && q->source != SECRETS_COMMAND) {
        snprintf(why, why_size, "unknown secret source %d", (int)q->source);
        return -1;
    }
    char *buf = malloc(SECRETS_OUTPUT_MAX + 1);
    if (!buf) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    int rc = q->source == SECRETS_FILE ? from_file(q->ref, q->multiline, buf, value, len, why,
                                                   why_size)
                                       : from_command(q, buf, value, len, why, why_size);
    OPENSSL_cleanse(buf, SECRETS_OUTPUT_MAX + 1);
    free(buf);
    return rc;
}

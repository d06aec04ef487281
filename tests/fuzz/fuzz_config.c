/* libFuzzer target: the configuration loader (include/config.h) over
 * arbitrary files.  config_load() takes a path, so each input is written to a
 * memfd and loaded as /proc/self/fd/N (relative paths in it then resolve
 * under /proc/<pid>/fd, where nothing useful is).  Seeds: the .json files of
 * config/ and tests/data/config/ (tests/run-fuzz adds them).
 *
 * Checked on every input: a load gives a configuration and no diagnostic,
 * or NULL and at least one; each diagnostic is one line of printable text
 * naming the file, shorter than CONFIG_DIAG_LINE_MAX; neither a diagnostic
 * nor the summary of a loaded configuration holds the value of a secret
 * (the environment variables set below) unless the input itself holds that
 * text; resolving a loaded configuration's secrets again reports as many
 * problems as it appends; config_free() clears the pointer.
 *
 * No *_command runs a shell here: execve() is defined below to end the
 * child at once (exit 127), so no fuzzer-made text reaches /bin/sh and the
 * loader sees a command that failed.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

static const char *const secrets[][2] = {
    {"TEST_CFG_PW", "fz-pw-Secret-4711"},
    {"TEST_CFG_TOKEN", "fz-token-Secret-4711"},
    {"TEST_CFG_OAUTH", "fz-oauth-Secret-4711"},
    {"TEST_CFG_WHSEC", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAAAAAAAAAA="},
    {"DEMO_POP3_PASSWORD", "fz-demo-pw-Secret-4711"},
    {"DEMO_WEBHOOK_SECRET", "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
    {"DEMO_API_TOKEN", "fz-demo-token-Secret-4711"},
};
#define NSECRETS (sizeof secrets / sizeof secrets[0])

static int mfd = -1;
static char path[64];

/* The child config.c forks for a *_command ends here instead of in /bin/sh. */
int execve(const char *file, char *const argv[], char *const envp[])
{
    (void)file;
    (void)argv;
    (void)envp;
    _exit(127);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (size_t i = 0; i < NSECRETS; i++)
        setenv(secrets[i][0], secrets[i][1], 1);
    mfd = memfd_create("fuzz_config", MFD_CLOEXEC);
    if (mfd < 0 || snprintf(path, sizeof path, "/proc/self/fd/%d", mfd) >= (int)sizeof path)
        abort();
    return 0;
}

/* Does text (NUL-terminated) hold a secret value the input does not? */
static bool leaks(const char *text, size_t tlen, const uint8_t *in, size_t inlen)
{
    for (size_t i = 0; i < NSECRETS; i++) {
        const char *s = secrets[i][1];
        if (memmem(text, tlen, s, strlen(s)) && !memmem(in, inlen, s, strlen(s)))
            return true;
    }
    return false;
}

static void check_diag(const struct config_diag *d, const uint8_t *in, size_t inlen)
{
    size_t plen = strlen(path);
    for (size_t i = 0; i < d->count; i++) {
        const char *l = d->lines[i];
        size_t n = strlen(l);
        if (n == 0 || n >= CONFIG_DIAG_LINE_MAX || strncmp(l, path, plen) != 0 || l[plen] != ':')
            abort();
        for (size_t k = 0; k < n; k++)
            if ((unsigned char)l[k] < 0x20 || l[k] == 0x7f)
                abort(); /* one line of text: no line break, no control character */
        if (leaks(l, n, in, inlen))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ftruncate(mfd, 0) < 0 || (size && pwrite(mfd, data, size, 0) != (ssize_t)size))
        abort();
    struct config_diag d = {0};
    struct config *cfg = config_load(path, &d);
    if (cfg ? d.count != 0 || d.dropped != 0 : d.count == 0)
        abort();
    check_diag(&d, data, size);
    config_diag_free(&d);
    if (cfg) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f)
            abort();
        config_print_summary(cfg, f);
        if (fclose(f) != 0 || leaks(text, len, data, size))
            abort();
        free(text);
        struct config_diag d2 = {0};
        int n = config_resolve_secrets(cfg, &d2);
        if (n < 0 || (size_t)n != d2.count + d2.dropped)
            abort();
        check_diag(&d2, data, size);
        config_diag_free(&d2);
        config_free(&cfg);
        if (cfg)
            abort();
    }
    return 0;
}

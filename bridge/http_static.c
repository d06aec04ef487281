/* http_static — see include/http_static.h. */
#include "http_static.h"

#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int http_static_share_dir(char *out, size_t size)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    static const char *const cands[] = {"%s/..", "%s/../..", "%s/../share/pop3bridge"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        char d[HTTP_PATH_MAX], f[HTTP_PATH_MAX + 16], real[PATH_MAX];
        int k = snprintf(d, sizeof d, cands[i], exe);
        if (k < 0 || (size_t)k >= sizeof d)
            continue;
        k = snprintf(f, sizeof f, "%s/openapi.yaml", d);
        if (k < 0 || (size_t)k >= sizeof f || access(f, R_OK) != 0 || !realpath(d, real))
            continue;
        if (snprintf(out, size, "%s", real) >= (int)size)
            return -1;
        return 0;
    }
    return -1;
}

const char *http_static_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"json", "application/json"},
        {"map", "application/json"},
        {"svg", "image/svg+xml"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"ico", "image/x-icon"},
        {"webp", "image/webp"},
        {"woff", "font/woff"},
        {"woff2", "font/woff2"},
        {"txt", "text/plain; charset=utf-8"},
        {"webmanifest", "application/manifest+json"},
    };
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name || dot[-1] == '/')
        return NULL;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot + 1, types[i].ext) == 0)
            return types[i].type;
    return NULL;
}

void http_static_file(struct http_req *r, const char *path, const char *ctype)
{
    http_set_static(r);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0)
            close(fd);
        http_problem(r, 404, "not-found", "no such file");
        return;
    }
    if ((uint64_t)sb.st_size > HTTP_STATIC_FILE_MAX) {
        close(fd);
        http_problem(r, 500, "internal", "the file is larger than HTTP_STATIC_FILE_MAX");
        return;
    }
    http_reply_fd(r, 200, fd, (uint64_t)sb.st_size, ctype);
}

static bool name_ok(const char *s)
{
    if (!s[0] || s[0] == '.')
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return false;
    return true;
}

/* The relative path of the request's segments; 0, or -1 when not allowed. */
static int relative_path(struct http_req *r, char *rel, size_t size)
{
    const char *const *seg;
    size_t nseg = http_segments(r, &seg), rl = 0;
    if (nseg == 0)
        return snprintf(rel, size, "index.html") < (int)size ? 0 : -1;
    if (nseg > HTTP_STATIC_DEPTH)
        return -1;
    for (size_t i = 0; i < nseg; i++) {
        if (!name_ok(seg[i]))
            return -1;
        int n = snprintf(rel + rl, size - rl, "%s%s", i ? "/" : "", seg[i]);
        if (n < 0 || (size_t)n >= size - rl)
            return -1;
        rl += (size_t)n;
    }
    return 0;
}

void http_static_serve(struct http_req *r, const char *web_dir)
{
    http_set_static(r);
    char rel[HTTP_PATH_MAX], full[HTTP_PATH_MAX], real[PATH_MAX];
    const char *type = relative_path(r, rel, sizeof rel) == 0 ? http_static_type(rel) : NULL;
    if (!type) {
        http_problem(r, 404, "not-found", "no such file");
        return;
    }
    if (!web_dir || !web_dir[0]) {
        http_problem(r, 404, "not-found", "the dashboard's files were not found (api.web_dir)");
        return;
    }
    int n = snprintf(full, sizeof full, "%s/%s", web_dir, rel);
    size_t wl = strlen(web_dir);
    if (n < 0 || (size_t)n >= sizeof full || !realpath(full, real) ||
        strncmp(real, web_dir, wl) != 0 || real[wl] != '/') {
        http_problem(r, 404, "not-found", "no such file");
        return;
    }
    http_static_file(r, real, type);
}

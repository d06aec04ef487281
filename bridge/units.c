/* units — sizes and durations; see include/units.h. */
#include "units.h"

#include <stdio.h>
#include <string.h>

static void why_set(char *why, size_t n, const char *msg)
{
    if (why && n)
        snprintf(why, n, "%s", msg);
}

/* Parse the leading decimal digits of s; *end is the rest. */
static int parse_digits(const char *s, uint64_t *v, const char **end)
{
    uint64_t x = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -2;
        x = x * 10 + d;
    }
    *v = x;
    *end = p;
    return 0;
}

static int mul_check(uint64_t v, uint64_t m, uint64_t *out)
{
    if (m && v > UINT64_MAX / m)
        return -1;
    *out = v * m;
    return 0;
}

int units_parse_size(const char *s, uint64_t *out, char *why, size_t why_size)
{
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {
        {"", 1},           {"B", 1},
        {"KiB", 1ULL << 10}, {"MiB", 1ULL << 20}, {"GiB", 1ULL << 30}, {"TiB", 1ULL << 40},
        {"KB", 1000},      {"MB", 1000000},     {"GB", 1000000000},  {"TB", 1000000000000ULL},
        {"k", 1ULL << 10}, {"K", 1ULL << 10},  {"M", 1ULL << 20},   {"G", 1ULL << 30},
    };
    uint64_t v;
    const char *end;
    if (!s) {
        why_set(why, why_size, "missing size");
        return -1;
    }
    int r = parse_digits(s, &v, &end);
    if (r == -2) {
        why_set(why, why_size, "size is too large");
        return -1;
    }
    if (r < 0) {
        why_set(why, why_size, "size must start with a whole number, e.g. \"25MiB\"");
        return -1;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (mul_check(v, units[i].mult, out) < 0) {
                why_set(why, why_size, "size is too large");
                return -1;
            }
            return 0;
        }
    }
    why_set(why, why_size, "unknown size unit (use B, KiB, MiB, GiB, KB, MB or GB)");
    return -1;
}

int units_parse_duration_ms(const char *s, int64_t *out_ms, char *why, size_t why_size)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    uint64_t v;
    const char *end;
    if (!s) {
        why_set(why, why_size, "missing duration");
        return -1;
    }
    int r = parse_digits(s, &v, &end);
    if (r < 0) {
        why_set(why, why_size,
                r == -2 ? "duration is too large"
                        : "duration must be a whole number with a unit, e.g. \"30s\"");
        return -1;
    }
    if (*end == '\0') {
        why_set(why, why_size, "duration needs a unit (ms, s, m, h or d), e.g. \"30s\"");
        return -1;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            uint64_t ms;
            if (mul_check(v, units[i].ms, &ms) < 0 || ms > (uint64_t)INT64_MAX / 2) {
                why_set(why, why_size, "duration is too large");
                return -1;
            }
            *out_ms = (int64_t)ms;
            return 0;
        }
    }
    why_set(why, why_size, "unknown duration unit (use ms, s, m, h or d)");
    return -1;
}

char *units_format_size(uint64_t v, char *buf, size_t size)
{
    static const char *names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    size_t u = 0;
    while (u + 1 < sizeof names / sizeof names[0] && v >= 1024 && v % 1024 == 0) {
        v /= 1024;
        u++;
    }
    if (snprintf(buf, size, "%llu%s", (unsigned long long)v, names[u]) >= (int)size && size)
        buf[size - 1] = '\0';
    return buf;
}

char *units_format_duration(int64_t ms, char *buf, size_t size)
{
    static const struct {
        const char *suffix;
        int64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};
    const char *suffix = "ms";
    int64_t v = ms;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            v = ms / units[i].ms;
            suffix = units[i].suffix;
            break;
        }
    }
    if (snprintf(buf, size, "%lld%s", (long long)v, suffix) >= (int)size && size)
        buf[size - 1] = '\0';
    return buf;
}

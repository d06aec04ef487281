/*
 * units — strict parsing of the sizes and durations users write.
 *
 * Sizes: a decimal integer, optionally followed by a unit: B, KiB, MiB, GiB
 * (powers of 1024), KB, MB, GB (powers of 1000), or k/K, M, G as 1024-based
 * shorthands.  "25MiB", "256KiB", "1048576".
 * Durations: a decimal integer followed by ms, s, m, h or d: "500ms", "30s",
 * "5m", "2h", "7d".  A bare integer is refused (the unit must be said).
 * Whitespace, signs, fractions and overflow are refused.
 */
#ifndef POP3BRIDGE_UNITS_H
#define POP3BRIDGE_UNITS_H

#include <stddef.h>
#include <stdint.h>

/* 0 on success; -1 with a one-line reason in why (why may be NULL). */
int units_parse_size(const char *s, uint64_t *out, char *why, size_t why_size);
int units_parse_duration_ms(const char *s, int64_t *out_ms, char *why, size_t why_size);

/* "25MiB", "1.5KiB" style for summaries; returns buf. */
char *units_format_size(uint64_t v, char *buf, size_t size);
/* "30s", "5m", "7d", "1500ms" (largest exact unit); returns buf. */
char *units_format_duration(int64_t ms, char *buf, size_t size);

#endif

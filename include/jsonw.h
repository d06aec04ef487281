/*
 * jsonw — a cJSON tree written out in chunks, without printing it into one
 * string first.
 *
 * The bytes are exactly those of cJSON_PrintUnformatted() on the same tree
 * (RFC 8259 JSON, no whitespace): the same escapes in strings ("\"", "\\",
 * \b \f \n \r \t, other bytes below 0x20 as \u00xx, everything else —
 * UTF-8 included — as it is), the same number forms ("%1.15g", or "%1.17g"
 * when 15 digits do not give the same double back; NaN and infinities as
 * null), raw items as they are.  So a large event goes to a file, a socket
 * or a hash in pieces of at most JSONW_CHUNK bytes, and the memory it takes
 * is the tree's, not the tree's plus its text.
 *
 * Pure functions, thread-safe; the tree is only read.
 */
#ifndef POP3BRIDGE_JSONW_H
#define POP3BRIDGE_JSONW_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define JSONW_CHUNK (16u << 10)       /* bytes handed to the sink at most per call */
#define JSONW_DEPTH_MAX CJSON_NESTING_LIMIT /* nesting of arrays and objects written */

/* Receives the next len (> 0) bytes of the text; 0 to go on, or -1 with e
 * set to stop. */
typedef int (*jsonw_sink_fn)(void *ctx, const void *data, size_t len, struct err *e);

/* Write `item` to sink in order, in chunks.  *written (may be NULL) gets the
 * byte count.  0, or -1 with e: the sink's own error, ERR_LIMIT (nesting
 * deeper than JSONW_DEPTH_MAX), ERR_USAGE (item or sink NULL, an item of
 * no known type, a raw item without text — where cJSON would print nothing).
 * A string item or member name without text is "" (as cJSON prints it). */
int jsonw_write(const cJSON *item, jsonw_sink_fn sink, void *ctx, uint64_t *written,
                struct err *e);

#endif

/*
 * subaddr — the message object's `mailbox_hash`: the detail part of the
 * recipient address that is the account's own address with a "+detail"
 * (RFC 5233 subaddressing: "support+billing@example.com" gives "billing").
 *
 * The recipients are looked at in the order given (the caller gives
 * Delivered-To, X-Original-To, To, then Cc: the envelope first).  A recipient
 * matches when its domain equals the account's (ASCII case-insensitively)
 * and its local part is the account's local part followed by '+' and at
 * least one character (the local part compared case-insensitively too, as
 * mail systems do).  The first match gives the detail, as written.
 *
 * Limits: addresses longer than SUBADDR_ADDRESS_MAX bytes are not looked at.
 * Pure functions, thread-safe.
 */
#ifndef POP3BRIDGE_SUBADDR_H
#define POP3BRIDGE_SUBADDR_H

#include <stddef.h>

#define SUBADDR_ADDRESS_MAX 320 /* bytes of an address (RFC 5321 allows 254 in a path) */
#define SUBADDR_SEPARATOR '+'

/*
 * The detail of the first of `recipients` (addr-specs, "local@domain") that is
 * `account` (an addr-spec) with a detail; NULL when there is none, or when
 * `account` is NULL or not an address.  The result is valid UTF-8, g_malloc'd
 * (the caller frees it with g_free).
 */
char *subaddr_detail(const char *account, const char *const *recipients, size_t count);

#endif

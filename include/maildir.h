/*
 * maildir — durable delivery of messages into a Maildir, keyed by UIDL.
 *
 * Each message is written to tmp/, fsync'd, and renamed into new/ (the
 * Maildir protocol, so a crash leaves no partial message in new/).  The file
 * name carries a key derived from (source, UIDL), ",U=<24 hex>", so a later
 * run sees which UIDLs are already stored, in new/ or cur/, whatever a mail
 * reader renamed them to.
 *
 * Errors: ERR_INTERNAL with the path and errno text.
 */
#ifndef POP3BRIDGE_MAILDIR_H
#define POP3BRIDGE_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

#define MAILDIR_KEY_LEN 24

struct maildir;

/* Open (creating tmp/ new/ cur/ as needed) and index the keys present. */
struct maildir *maildir_open(const char *path, struct err *e);
void maildir_close(struct maildir **md);

/* The key for a message: hex of SHA-256(source NUL uidl), MAILDIR_KEY_LEN chars. */
void maildir_key(const char *source, const char *uidl, char key[MAILDIR_KEY_LEN + 1]);
bool maildir_has(const struct maildir *md, const char *key);

/* One message at a time: begin, write..., commit (or abort). */
int maildir_begin(struct maildir *md, const char *key, struct err *e);
int maildir_write(struct maildir *md, const void *buf, size_t len, struct err *e);
int maildir_commit(struct maildir *md, struct err *e);
void maildir_abort(struct maildir *md);
/* fsync new/ so the renames are durable (before the server deletes anything). */
int maildir_sync(struct maildir *md, struct err *e);

#endif

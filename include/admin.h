/*
 * admin — an operator's commands on a bridge's state (the SQLite store named
 * by a configuration file's state_dir); they read no secret, so they run
 * where the service's secrets are not at hand (config_load_layout).
 *
 *   pop3bridge store backup --config FILE OUT
 *       a consistent copy of the state while bridges run (store_backup)
 *   pop3bridge store restore --config FILE IN
 *       put a copy back; refused while a bridge runs on it (store_restore)
 *   pop3bridge export --config FILE ACCOUNT --maildir DIR | --mbox FILE
 *       the messages stored for ACCOUNT, whose bodies are still kept, in
 *       the order they were stored:
 *       --maildir DIR  one file per message in DIR/new (created with tmp/
 *                      and cur/ if missing), written to tmp/, fsync'd and
 *                      renamed (maildir.h); each file holds exactly the
 *                      bytes the server sent (as stored: dot-unstuffed,
 *                      CRLF line ends).  Named with a key of (account,
 *                      UIDL), so exporting again adds only what is new.
 *       --mbox FILE    a new mbox (refused if FILE exists), mboxrd: each
 *                      message after a line "From MAILER-DAEMON <date it
 *                      was stored, asctime(3) form, UTC>"; CRLF line ends
 *                      become LF (a lone CR stays); a line starting with
 *                      zero or more '>' and "From " gets one more '>'; a
 *                      message not ending in a line break gets one; an
 *                      empty line follows each.  Written to FILE.tmp-<pid>,
 *                      fsync'd, then linked to FILE.
 *       Every message's bytes are checked against the SHA-256 recorded
 *       when it was stored.  Messages whose bodies were purged (retention)
 *       or never fetched (too large) are counted, not exported.
 *
 * Exit codes: 0 done; 1 restore refused: a bridge is running on the state;
 * 2 usage, or an invalid configuration file, or no such account;
 * 9 local failure (the store, the file system, a checksum mismatch).
 * Every failure prints one line on stderr, "pop3bridge: <what>"; success
 * prints one line on stdout saying what was done.
 */
#ifndef POP3BRIDGE_ADMIN_H
#define POP3BRIDGE_ADMIN_H

#include <stdio.h>

#define ADMIN_EXIT_IN_USE 1

/* argv[0] is "store" / "export"; each returns the process exit code. */
int admin_store_main(int argc, char **argv);
int admin_export_main(int argc, char **argv);
/* Usage lines for `pop3bridge --help`. */
void admin_usage(FILE *out);

#endif

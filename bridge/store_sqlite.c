/*
 * store_sqlite — the store (include/store.h) on SQLite: this file holds the
 * schema, the statements, transactions, open / close and the ops table; the
 * other areas are in store_sqlite_{msg,dlv,acct,backup}.c
 * (bridge/store_sqlite_impl.h lists them).
 *
 * One sqlite3 connection per struct store, opened SQLITE_OPEN_NOMUTEX (a
 * handle is used by one thread at a time); WAL lets readers and one writer
 * work concurrently across handles.  Every write is a transaction begun with
 * BEGIN IMMEDIATE, so a writer waits (busy timeout) for the lock up front
 * instead of failing on a read-to-write upgrade.  Inside a batch, each call
 * is a SAVEPOINT within the batch's transaction.
 *
 * Prepared statements are cached per handle (enum sid), prepared on first
 * use with SQLITE_PREPARE_PERSISTENT, and always reset and cleared after use
 * so no statement keeps a read transaction open.
 *
 * Schema (version 10, STORE_SCHEMA_VERSION; 9 and 10 change nothing here):
 *   accounts(name PK, state, last_error, last_attempt_at, last_success_at,
 *            backoff_until, last_error_code)       -- last_error_code: 8
 *   messages(id PK, account, uidl, size, sha256, received_at, subject,
 *            from_addr, message_id_hdr, date_hdr, delivered_at,
 *            body_purged_at, kind, declared_size, event_key,
 *            duplicate_of)                             -- duplicate_of: 7
 *   bodies(message_id PK -> messages, raw BLOB)   -- purge deletes the row
 *   uidls(account, uidl, state 0..3, message_id -> messages, seen_at)
 *   events(id PK, account, type, data, created_at, event_key)   -- schema 7
 *   deliveries(id PK, message_id -> messages | event_id -> events (one of
 *              the two), account, webhook, status 0..4, attempts,
 *              next_attempt_at, created_at, updated_at, delivered_at,
 *              last_http_status, last_error, lease_owner, lease_until)  -- 7
 *   attempts(id PK, delivery_id -> deliveries, started_at, duration_ms,
 *            http_status, error, outcome)
 *   webhooks_disabled(name PK, reason, since)
 *   instances(id PK, host, public_url, started_at, heartbeat_at)
 *   link_key(id PK = 1, key, created_at)              -- schema 6
 *   oauth2_tokens(account PK, version, status 0..1, flow, error,
 *            access_sealed, refresh_sealed, access_issued_at,
 *            access_expires_at, authorized_at, refresh_used_at, retry_at,
 *            failures, lease_owner, lease_until)      -- schema 4
 * Indexes on attempts(started_at) and messages(received_at) (schema 5) serve
 * the dashboard's statistics.
 * accounts also carry lease_owner, lease_until and next_poll_at.
 * Integer states equal enum store_uidl_state / enum store_dstatus.
 */
#include "store.h"
#include "store_impl.h"
#include "store_sqlite_impl.h"

#include "codec.h"
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define WAL_RETRY_MS 10 /* wait step while another opener switches to WAL */

/* ---- schema ------------------------------------------------------------ */

static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE accounts("
    "  name TEXT PRIMARY KEY,"
    "  state TEXT NOT NULL,"
    "  last_error TEXT NOT NULL DEFAULT '',"
    "  last_attempt_at INTEGER NOT NULL DEFAULT 0,"
    "  last_success_at INTEGER NOT NULL DEFAULT 0,"
    "  backoff_until INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE messages("
    "  id INTEGER PRIMARY KEY,"
    "  account TEXT NOT NULL,"
    "  uidl TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  received_at INTEGER NOT NULL,"
    "  subject TEXT, from_addr TEXT, message_id_hdr TEXT, date_hdr TEXT,"
    "  delivered_at INTEGER,"
    "  body_purged_at INTEGER);"
    "CREATE INDEX messages_account ON messages(account, body_purged_at);"
    "CREATE INDEX messages_purgeable ON messages(delivered_at)"
    "  WHERE body_purged_at IS NULL;"
    "CREATE TABLE bodies("
    "  message_id INTEGER PRIMARY KEY REFERENCES messages(id),"
    "  raw BLOB NOT NULL);"
    "CREATE TABLE uidls("
    "  account TEXT NOT NULL,"
    "  uidl TEXT NOT NULL,"
    "  state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 3),"
    "  message_id INTEGER REFERENCES messages(id),"
    "  seen_at INTEGER NOT NULL,"
    "  PRIMARY KEY (account, uidl)) WITHOUT ROWID;"
    "CREATE INDEX uidls_message ON uidls(message_id) WHERE message_id IS NOT NULL;"
    "CREATE TABLE deliveries("
    "  id INTEGER PRIMARY KEY,"
    "  message_id INTEGER NOT NULL REFERENCES messages(id),"
    "  account TEXT NOT NULL,"
    "  webhook TEXT NOT NULL,"
    "  status INTEGER NOT NULL CHECK (status BETWEEN 0 AND 3),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt_at INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  delivered_at INTEGER NOT NULL DEFAULT 0,"
    "  last_http_status INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT NOT NULL DEFAULT '',"
    "  claimed_at INTEGER,"
    "  UNIQUE (message_id, webhook));"
    "CREATE INDEX deliveries_due ON deliveries(next_attempt_at, id)"
    "  WHERE status IN (0, 2) AND claimed_at IS NULL;"
    "CREATE INDEX deliveries_status ON deliveries(status, id);"
    "CREATE INDEX deliveries_account ON deliveries(account, id);"
    "CREATE INDEX deliveries_account_status ON deliveries(account, status, id);"
    "CREATE TABLE attempts("
    "  id INTEGER PRIMARY KEY,"
    "  delivery_id INTEGER NOT NULL REFERENCES deliveries(id),"
    "  started_at INTEGER NOT NULL,"
    "  duration_ms INTEGER NOT NULL,"
    "  http_status INTEGER NOT NULL,"
    "  error TEXT NOT NULL,"
    "  outcome TEXT NOT NULL);"
    "CREATE INDEX attempts_delivery ON attempts(delivery_id, id);"
    "CREATE TABLE webhooks_disabled("
    "  name TEXT PRIMARY KEY,"
    "  reason TEXT NOT NULL,"
    "  since INTEGER NOT NULL);",
    /* 2: messages too large to retrieve are stored as their header */
    "ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';"
    "ALTER TABLE messages ADD COLUMN declared_size INTEGER NOT NULL DEFAULT 0;",
    /* 3: leases (owner + expiry) instead of claims; a random event key per
     * message for webhook-ids; the instances sharing the store */
    "DROP INDEX deliveries_due;"
    "ALTER TABLE deliveries DROP COLUMN claimed_at;"
    "ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;"
    "ALTER TABLE deliveries ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX deliveries_due ON deliveries(next_attempt_at, id) WHERE status IN (0, 2);"
    "CREATE INDEX deliveries_due_webhook ON deliveries(webhook, next_attempt_at, id)"
    "  WHERE status IN (0, 2);"
    "CREATE INDEX deliveries_leased ON deliveries(lease_owner) WHERE lease_owner IS NOT NULL;"
    "ALTER TABLE messages ADD COLUMN event_key TEXT;"
    "ALTER TABLE accounts ADD COLUMN lease_owner TEXT;"
    "ALTER TABLE accounts ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE accounts ADD COLUMN next_poll_at INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE instances("
    "  id TEXT PRIMARY KEY,"
    "  host TEXT NOT NULL,"
    "  public_url TEXT NOT NULL DEFAULT '',"
    "  started_at INTEGER NOT NULL,"
    "  heartbeat_at INTEGER NOT NULL);",
    /* 4: OAuth2 grants, their tokens sealed (opaque here), with a refresh
     * lease and a version for compare-and-set */
    "CREATE TABLE oauth2_tokens("
    "  account TEXT PRIMARY KEY,"
    "  version INTEGER NOT NULL,"
    "  status INTEGER NOT NULL DEFAULT 0 CHECK (status IN (0, 1)),"
    "  flow TEXT NOT NULL,"
    "  error TEXT NOT NULL DEFAULT '',"
    "  access_sealed BLOB,"
    "  refresh_sealed BLOB,"
    "  access_issued_at INTEGER NOT NULL DEFAULT 0,"
    "  access_expires_at INTEGER NOT NULL DEFAULT 0,"
    "  authorized_at INTEGER NOT NULL DEFAULT 0,"
    "  refresh_used_at INTEGER NOT NULL DEFAULT 0,"
    "  retry_at INTEGER NOT NULL DEFAULT 0,"
    "  failures INTEGER NOT NULL DEFAULT 0,"
    "  lease_owner TEXT,"
    "  lease_until INTEGER NOT NULL DEFAULT 0);",
    /* 5: the dashboard's statistics read attempts and messages by time */
    "CREATE INDEX attempts_started ON attempts(started_at);"
    "CREATE INDEX messages_received ON messages(received_at);",
    /* 6: the key that signs the links in events and answers (raw_url,
     * attachment url), one per store so every instance sharing it agrees;
     * replaced to revoke every link */
    "CREATE TABLE link_key("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  key BLOB NOT NULL CHECK (length(key) = 32),"
    "  created_at INTEGER NOT NULL);",
    /* 7: events that are not messages (account.auth_error) in the outbox
     * beside messages, and a fifth delivery status, dropped.  SQLite cannot
     * change a column's constraints: deliveries is rebuilt with the same ids
     * (migrate() turns foreign keys off meanwhile), so attempts keep their
     * deliveries.  Messages get duplicate_of and an index on (account,
     * Message-ID) for de-duplication. */
    "CREATE TABLE events("
    "  id INTEGER PRIMARY KEY,"
    "  account TEXT NOT NULL,"
    "  type TEXT NOT NULL,"
    "  data TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  event_key TEXT NOT NULL);"
    "CREATE INDEX events_account ON events(account, id);"
    "CREATE TABLE deliveries_v7("
    "  id INTEGER PRIMARY KEY,"
    "  message_id INTEGER REFERENCES messages(id),"
    "  event_id INTEGER REFERENCES events(id),"
    "  account TEXT NOT NULL,"
    "  webhook TEXT NOT NULL,"
    "  status INTEGER NOT NULL CHECK (status BETWEEN 0 AND 4),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt_at INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  delivered_at INTEGER NOT NULL DEFAULT 0,"
    "  last_http_status INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT NOT NULL DEFAULT '',"
    "  lease_owner TEXT,"
    "  lease_until INTEGER NOT NULL DEFAULT 0,"
    "  CHECK ((message_id IS NULL) <> (event_id IS NULL)),"
    "  UNIQUE (message_id, webhook),"
    "  UNIQUE (event_id, webhook));"
    "INSERT INTO deliveries_v7(id, message_id, account, webhook, status, attempts,"
    "  next_attempt_at, created_at, updated_at, delivered_at, last_http_status, last_error,"
    "  lease_owner, lease_until)"
    "  SELECT id, message_id, account, webhook, status, attempts, next_attempt_at, created_at,"
    "  updated_at, delivered_at, last_http_status, last_error, lease_owner, lease_until"
    "  FROM deliveries;"
    "DROP TABLE deliveries;"
    "ALTER TABLE deliveries_v7 RENAME TO deliveries;"
    "CREATE INDEX deliveries_due ON deliveries(next_attempt_at, id) WHERE status IN (0, 2);"
    "CREATE INDEX deliveries_due_webhook ON deliveries(webhook, next_attempt_at, id)"
    "  WHERE status IN (0, 2);"
    "CREATE INDEX deliveries_leased ON deliveries(lease_owner) WHERE lease_owner IS NOT NULL;"
    "CREATE INDEX deliveries_status ON deliveries(status, id);"
    "CREATE INDEX deliveries_account ON deliveries(account, id);"
    "CREATE INDEX deliveries_account_status ON deliveries(account, status, id);"
    "CREATE INDEX deliveries_webhook_status ON deliveries(webhook, status, id);"
    "ALTER TABLE messages ADD COLUMN duplicate_of INTEGER;"
    "CREATE INDEX messages_message_id ON messages(account, message_id_hdr)"
    "  WHERE message_id_hdr IS NOT NULL;",
    /* 8: the kind of an account's last error for programs (login_delay,
     * auth, ...), beside its text; a LOGIN-DELAY saved before is known by
     * the text the server's code was saved in */
    "ALTER TABLE accounts ADD COLUMN last_error_code TEXT NOT NULL DEFAULT '';"
    "UPDATE accounts SET last_error_code = 'login_delay'"
    "  WHERE last_error LIKE '%server said \"[LOGIN-DELAY]%';",
    /* 9: reserved (an index migration in progress elsewhere takes it) */
    "",
    /* 10: PostgreSQL's poll history tables; SQLite keeps the poll history in
     * memory (pollhist.h), so nothing here */
    "",
};
#define N_MIGRATIONS (sizeof migrations / sizeof migrations[0])
_Static_assert(N_MIGRATIONS == STORE_SCHEMA_VERSION, "one migration per schema version");

/* ---- statements -------------------------------------------------------- */

#define D_SELECT                                                                        \
    "SELECT d.id, coalesce(d.message_id, 0), d.account, coalesce(m.uidl, ''), d.webhook," \
    " d.status, d.attempts, d.created_at, d.updated_at, d.next_attempt_at,"             \
    " d.delivered_at, d.last_http_status, d.last_error,"                                \
    " coalesce(m.event_key, ev.event_key), d.lease_owner, d.lease_until,"               \
    " coalesce(d.event_id, 0), coalesce(ev.type, '')"                                   \
    " FROM deliveries d "
/* a delivery is of a message or of an event (schema 7) */
#define D_JOINS                                                                         \
    "LEFT JOIN messages m ON m.id = d.message_id LEFT JOIN events ev ON ev.id = d.event_id "
#define D_COLS D_SELECT D_JOINS
/* the partial indexes keep "oldest due first" a range scan, not a sort */
#define D_DUE_COLS D_SELECT "INDEXED BY deliveries_due " D_JOINS
#define D_DUE_WH_COLS D_SELECT "INDEXED BY deliveries_due_webhook " D_JOINS
#define D_DUE_WHERE                                                                     \
    "d.status IN (0, 2) AND d.next_attempt_at <= ?1 AND d.lease_until <= ?1"            \
    " AND d.webhook NOT IN (SELECT name FROM webhooks_disabled)"

static const char *const sql_text[S_COUNT] = {
    [S_UIDLS_EACH] = "SELECT uidl, state, message_id FROM uidls WHERE account = ?1",
    [S_UIDL_GET] = "SELECT state, message_id FROM uidls WHERE account = ?1 AND uidl = ?2",
    [S_UIDL_INS_IGNORED] = "INSERT OR IGNORE INTO uidls(account, uidl, state, message_id, seen_at)"
                           " VALUES (?1, ?2, 0, NULL, ?3)",
    [S_DELETABLE] = "SELECT u.uidl, u.state, u.message_id FROM uidls u"
                    " JOIN messages m ON m.id = u.message_id"
                    " WHERE u.account = ?1 AND u.state = 2 AND m.kind = 'message'"
                    " AND (?2 OR (?3 > 0 AND m.received_at <= ?4 - ?3))"
                    " AND NOT EXISTS (SELECT 1 FROM deliveries d"
                    "   WHERE d.message_id = u.message_id AND d.status NOT IN (1, 4))",
    [S_MARK_DELETED] = "UPDATE uidls SET state = 3 WHERE account = ?1 AND uidl = ?2",
    [S_LISTED_CLEAR] = "DELETE FROM temp.listed",
    [S_LISTED_INS] = "INSERT OR IGNORE INTO temp.listed(uidl) VALUES (?1)",
    [S_FORGET] = "DELETE FROM uidls WHERE account = ?1 AND state <> 1"
                 " AND uidl NOT IN (SELECT uidl FROM temp.listed)"
                 " AND (message_id IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries d"
                 "   WHERE d.message_id = uidls.message_id AND d.status NOT IN (1, 4)))",
    [S_MSG_INS] = "INSERT INTO messages(account, uidl, size, sha256, received_at, subject,"
                  " from_addr, message_id_hdr, date_hdr, delivered_at, kind, declared_size,"
                  " event_key, duplicate_of)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    [S_BODY_INS] = "INSERT INTO bodies(message_id, raw) VALUES (?1, ?2)",
    [S_UIDL_INS_STORED] = "INSERT INTO uidls(account, uidl, state, message_id, seen_at)"
                          " VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_DELIV_INS] = "INSERT INTO deliveries(message_id, account, webhook, status, attempts,"
                    " next_attempt_at, created_at, updated_at)"
                    " VALUES (?1, ?2, ?3, 0, 0, ?4, ?4, ?4)",
    [S_MSG_GET] = "SELECT id, account, uidl, size, sha256, received_at, delivered_at,"
                  " body_purged_at, subject, from_addr, message_id_hdr, date_hdr, kind,"
                  " declared_size, event_key, coalesce(duplicate_of, 0) FROM messages WHERE id = ?1",
    [S_NEXT_DUE] = "SELECT min(max(next_attempt_at, CASE WHEN lease_until > ?1"
                   " THEN lease_until ELSE 0 END)) FROM deliveries"
                   " WHERE status IN (0, 2)"
                   " AND webhook NOT IN (SELECT name FROM webhooks_disabled)",
    [S_BODY_LEN] = "SELECT length(raw) FROM bodies WHERE message_id = ?1",
    [S_DUE] = D_DUE_COLS "WHERE " D_DUE_WHERE " ORDER BY d.next_attempt_at, d.id LIMIT ?2",
    [S_DUE_WH] = D_DUE_WH_COLS "WHERE d.webhook = ?3 AND " D_DUE_WHERE
                               " ORDER BY d.next_attempt_at, d.id LIMIT ?2",
    [S_LEASE] = "UPDATE deliveries SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1",
    [S_RENEW] = "UPDATE deliveries SET lease_until = ?2 WHERE lease_owner = ?1",
    [S_RELEASE_ALL] = "UPDATE deliveries SET lease_owner = NULL, lease_until = 0"
                      " WHERE lease_owner = ?1",
    [S_RELEASE_ONE] = "UPDATE deliveries SET lease_owner = NULL, lease_until = 0"
                      " WHERE lease_owner = ?1 AND id = ?2",
    [S_DELIV_STATUS] = "SELECT status, coalesce(message_id, 0), lease_owner, lease_until FROM deliveries"
                       " WHERE id = ?1",
    [S_DELIV_UPDATE] = "UPDATE deliveries SET status = ?2, attempts = attempts + 1,"
                       " next_attempt_at = ?3, updated_at = ?4, delivered_at = ?5,"
                       " last_http_status = ?6, last_error = ?7, lease_owner = NULL,"
                       " lease_until = 0 WHERE id = ?1",
    [S_ATTEMPT_INS] = "INSERT INTO attempts(delivery_id, started_at, duration_ms, http_status,"
                      " error, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [S_MSG_UNDELIVERED] = "SELECT count(*) FROM deliveries WHERE message_id = ?1"
                          " AND status NOT IN (1, 4)",
    [S_MSG_SET_DELIVERED] = "UPDATE messages SET delivered_at = ?2"
                            " WHERE id = ?1 AND delivered_at IS NULL",
    [S_UIDL_SET_DELIVERED] = "UPDATE uidls SET state = 2 WHERE message_id = ?1 AND state = 1",
    [S_RETRY] = "UPDATE deliveries SET status = 0, next_attempt_at = ?2, updated_at = ?2,"
                " lease_owner = NULL, lease_until = 0 WHERE id = ?1",
    [S_DELIV_GET] = D_COLS "WHERE d.id = ?1",
    [S_ATTEMPTS] = "SELECT started_at, duration_ms, http_status, error, outcome FROM attempts"
                   " WHERE delivery_id = ?1 ORDER BY id",
    [S_LIST_ALL] = D_COLS "WHERE d.id < :before ORDER BY d.id DESC LIMIT :limit",
    [S_LIST_S] = D_COLS "WHERE d.status = :status AND d.id < :before"
                        " ORDER BY d.id DESC LIMIT :limit",
    [S_LIST_A] = D_COLS "WHERE d.account = :account AND d.id < :before"
                        " ORDER BY d.id DESC LIMIT :limit",
    [S_LIST_SA] = D_COLS "WHERE d.account = :account AND d.status = :status"
                         " AND d.id < :before ORDER BY d.id DESC LIMIT :limit",
    [S_COUNTS] = "SELECT status, count(*) FROM deliveries GROUP BY status",
    [S_WH_DISABLE] = "INSERT INTO webhooks_disabled(name, reason, since) VALUES (?1, ?2, ?3)"
                     " ON CONFLICT(name) DO NOTHING",
    [S_WH_ENABLE_ALL] = "DELETE FROM webhooks_disabled",
    [S_WH_GET] = "SELECT since FROM webhooks_disabled WHERE name = ?1",
    [S_LINK_GET] = "SELECT key, created_at FROM link_key WHERE id = 1",
    [S_LINK_CREATE] = "INSERT OR IGNORE INTO link_key(id, key, created_at) VALUES (1, ?1, ?2)",
    [S_LINK_SET] = "INSERT OR REPLACE INTO link_key(id, key, created_at) VALUES (1, ?1, ?2)",
    [S_ACC_GET] = "SELECT state, last_error, last_attempt_at, last_success_at, backoff_until,"
                  " last_error_code FROM accounts WHERE name = ?1",
    [S_ACC_SET] = "INSERT INTO accounts(name, state, last_error, last_attempt_at,"
                  " last_success_at, backoff_until, last_error_code)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                  " ON CONFLICT(name) DO UPDATE SET state = excluded.state,"
                  " last_error = excluded.last_error, last_attempt_at = excluded.last_attempt_at,"
                  " last_success_at = excluded.last_success_at,"
                  " backoff_until = excluded.backoff_until,"
                  " last_error_code = excluded.last_error_code",
    [S_ACC_LEASE] = "INSERT INTO accounts(name, state, lease_owner, lease_until)"
                    " VALUES (?1, 'idle', ?2, ?3) ON CONFLICT(name) DO UPDATE SET"
                    " lease_owner = excluded.lease_owner, lease_until = excluded.lease_until"
                    " WHERE accounts.lease_owner IS NULL OR accounts.lease_owner = ?2"
                    " OR accounts.lease_until <= ?4",
    [S_ACC_RENEW] = "UPDATE accounts SET lease_until = ?2 WHERE lease_owner = ?1",
    [S_ACC_RELEASE_ALL] = "UPDATE accounts SET lease_owner = NULL, lease_until = 0"
                          " WHERE lease_owner = ?1",
    [S_ACC_GIVE_BACK] = "UPDATE accounts SET lease_owner = NULL, lease_until = 0"
                        " WHERE name = ?1 AND lease_owner = ?2",
    [S_ACC_STORED] = "SELECT count(*) FROM messages WHERE account = ?1 AND body_purged_at IS NULL",
    [S_ACC_PENDING] = "SELECT count(*) FROM deliveries WHERE account = ?1 AND status IN (0, 2)",
    [S_PURGE_CLEAR] = "DELETE FROM temp.purge",
    [S_PURGE_SEL] = "INSERT INTO temp.purge(id) SELECT id FROM messages"
                    " WHERE delivered_at IS NOT NULL AND delivered_at <= ?1"
                    " AND body_purged_at IS NULL ORDER BY delivered_at LIMIT ?2",
    [S_PURGE_BODIES] = "DELETE FROM bodies WHERE message_id IN (SELECT id FROM temp.purge)",
    [S_PURGE_MARK] = "UPDATE messages SET body_purged_at = ?1"
                     " WHERE id IN (SELECT id FROM temp.purge)",
    /* settled events past retention, but the newest of each account and type */
    [S_EVPURGE_SEL] = "INSERT INTO temp.purge(id) SELECT ev.id FROM events ev"
                      " WHERE ev.created_at <= ?1"
                      " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = ev.id"
                      "   AND d.status NOT IN (1, 4))"
                      " AND EXISTS (SELECT 1 FROM events n WHERE n.account = ev.account"
                      "   AND n.type = ev.type AND n.id > ev.id)"
                      " ORDER BY ev.id LIMIT ?2",
    [S_EVPURGE_ATTEMPTS] = "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"
                           " WHERE event_id IN (SELECT id FROM temp.purge))",
    [S_EVPURGE_DELIVERIES] = "DELETE FROM deliveries WHERE event_id IN (SELECT id FROM temp.purge)",
    [S_EVPURGE_EVENTS] = "DELETE FROM events WHERE id IN (SELECT id FROM temp.purge)",
    [S_OA_GET] = "SELECT version, status, flow, error, access_sealed, refresh_sealed,"
                 " access_issued_at, access_expires_at, authorized_at, refresh_used_at,"
                 " retry_at, failures, lease_owner, lease_until"
                 " FROM oauth2_tokens WHERE account = ?1",
    [S_OA_GRANT] = "INSERT INTO oauth2_tokens(account, version, status, flow, error,"
                   " access_sealed, refresh_sealed, access_issued_at, access_expires_at,"
                   " authorized_at, refresh_used_at, retry_at, failures, lease_owner,"
                   " lease_until) VALUES (?1, 1, 0, ?2, '', ?3, ?4, ?5, ?6, ?7, 0, 0, 0, NULL, 0)"
                   " ON CONFLICT(account) DO UPDATE SET version = version + 1, status = 0,"
                   " flow = excluded.flow, error = '', access_sealed = excluded.access_sealed,"
                   " refresh_sealed = excluded.refresh_sealed,"
                   " access_issued_at = excluded.access_issued_at,"
                   " access_expires_at = excluded.access_expires_at,"
                   " authorized_at = excluded.authorized_at, refresh_used_at = 0, retry_at = 0,"
                   " failures = 0, lease_owner = NULL, lease_until = 0",
    [S_OA_CREATE] = "INSERT INTO oauth2_tokens(account, version, flow) VALUES (?1, 1, ?2)",
    [S_OA_LEASE] = "UPDATE oauth2_tokens SET lease_owner = ?2, lease_until = ?3"
                   " WHERE account = ?1",
    [S_OA_REFRESHED] = "UPDATE oauth2_tokens SET version = version + 1, access_sealed = ?3,"
                       " refresh_sealed = coalesce(?4, refresh_sealed), access_issued_at = ?5,"
                       " access_expires_at = ?6, refresh_used_at = ?7, error = '', failures = 0,"
                       " retry_at = 0, lease_owner = NULL, lease_until = 0"
                       " WHERE account = ?1 AND version = ?2",
    [S_OA_FAILED] = "UPDATE oauth2_tokens SET version = version + 1,"
                    " status = CASE WHEN ?3 THEN 1 ELSE status END, error = ?4,"
                    " failures = failures + 1, retry_at = ?5, lease_owner = NULL, lease_until = 0"
                    " WHERE account = ?1 AND version = ?2",
    [S_OA_RELEASE] = "UPDATE oauth2_tokens SET lease_owner = NULL, lease_until = 0"
                     " WHERE account = ?1 AND lease_owner = ?2",
    [S_EVENT_INS] = "INSERT INTO events(account, type, data, created_at, event_key)"
                    " VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_EVENT_DELIV_INS] = "INSERT INTO deliveries(event_id, account, webhook, status, attempts,"
                          " next_attempt_at, created_at, updated_at)"
                          " VALUES (?1, ?2, ?3, 0, 0, ?4, ?4, ?4)",
    [S_EVENT_GET] = "SELECT account, type, data, created_at, event_key FROM events WHERE id = ?1",
    [S_DROP] = "UPDATE deliveries SET status = 4, updated_at = ?2, next_attempt_at = 0,"
               " lease_owner = NULL, lease_until = 0 WHERE id = ?1",
    [S_RETRY_BULK] = "UPDATE deliveries SET status = 0, next_attempt_at = ?1, updated_at = ?1,"
                     " lease_owner = NULL, lease_until = 0 WHERE id IN ("
                     " SELECT d.id FROM deliveries d WHERE d.status = ?2"
                     " AND (?3 IS NULL OR d.webhook = ?3)"
                     " AND (d.message_id IS NULL OR EXISTS (SELECT 1 FROM bodies b"
                     "   WHERE b.message_id = d.message_id))"
                     " ORDER BY d.id LIMIT ?4)",
    [S_DUP_FIND] = "SELECT id FROM messages WHERE account = ?1 AND message_id_hdr = ?2"
                   " AND received_at >= ?3 AND duplicate_of IS NULL ORDER BY id LIMIT 1",
    [S_EVENT_LAST] = "SELECT max(created_at) FROM events WHERE account = ?1 AND type = ?2",
    /* statistics: plain SQL (integer division, CASE) that any SQL database runs */
    [S_WH_ATTEMPTS] = "SELECT count(*), sum(CASE WHEN a.http_status BETWEEN 200 AND 299"
                      " THEN 1 ELSE 0 END) FROM attempts a JOIN deliveries d"
                      " ON d.id = a.delivery_id WHERE d.webhook = ?1 AND a.started_at > ?2"
                      " AND a.started_at <= ?3",
    [S_WH_LATENCY] = "SELECT a.duration_ms FROM attempts a JOIN deliveries d"
                     " ON d.id = a.delivery_id WHERE d.webhook = ?1 AND a.started_at > ?2"
                     " AND a.started_at <= ?3 ORDER BY a.duration_ms LIMIT 1 OFFSET ?4",
    [S_WH_LAST_ERROR] = "SELECT a.started_at, a.http_status, a.error FROM attempts a"
                        " JOIN deliveries d ON d.id = a.delivery_id WHERE d.webhook = ?1"
                        " AND NOT (a.http_status BETWEEN 200 AND 299)"
                        " ORDER BY a.id DESC LIMIT 1",
    [S_HOURLY_MSGS] = "SELECT received_at / 3600000, count(*) FROM messages"
                      " WHERE received_at >= ?1 AND received_at < ?2"
                      " GROUP BY received_at / 3600000",
    [S_HOURLY_ATTEMPTS] = "SELECT started_at / 3600000, count(*), sum(CASE WHEN http_status"
                          " BETWEEN 200 AND 299 THEN 1 ELSE 0 END) FROM attempts"
                          " WHERE started_at >= ?1 AND started_at < ?2"
                          " GROUP BY started_at / 3600000",
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_SAVEPOINT] = "SAVEPOINT w",
    [S_RELEASE] = "RELEASE w",
    [S_ROLLBACK_TO] = "ROLLBACK TO w",
};

/* ---- small helpers ----------------------------------------------------- */

int sq_dberr(struct store *st, struct err *e, const char *op)
{
    return err_set(e, ERR_INTERNAL, "store: %s: %s", op, sqlite3_errmsg(st->db));
}

/* A cached statement, reset and with no bindings; NULL with *e on error. */
sqlite3_stmt *sq_stmt(struct store *st, enum sid id, struct err *e)
{
    sqlite3_stmt *s = st->stmt[id];
    if (!s) {
        if (sqlite3_prepare_v3(st->db, sql_text[id], -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) !=
            SQLITE_OK) {
            sq_dberr(st, e, "prepare");
            return NULL;
        }
        st->stmt[id] = s;
    }
    return s;
}

void sq_done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* Step a statement that returns no rows; reset it.  0 or -1. */
int sq_run(struct store *st, sqlite3_stmt *s, struct err *e, const char *op)
{
    int rc = sqlite3_step(s);
    int r = 0;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        r = sq_dberr(st, e, op);
    sq_done(s);
    return r;
}

int sq_write(struct store *st, sqlite3_stmt *s, int64_t *changes, struct err *e, const char *op)
{
    if (sq_tx_begin(st, e, op) < 0) {
        sq_done(s);
        return -1;
    }
    if (sq_run(st, s, e, op) < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    int64_t c = sqlite3_changes64(st->db);
    if (sq_tx_commit(st, e, op) < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    if (changes)
        *changes = c;
    return 0;
}

int sq_one(struct store *st, sqlite3_stmt *s, sq_row_fn read, void *out, struct err *e,
           const char *op)
{
    int rc = sqlite3_step(s), r = STORE_NOTFOUND;
    if (rc == SQLITE_ROW)
        r = read(s, out, e) < 0 ? -1 : 0;
    else if (rc != SQLITE_DONE)
        r = sq_dberr(st, e, op);
    sq_done(s);
    return r;
}

int sq_row_i64(sqlite3_stmt *s, void *out, struct err *e)
{
    (void)e;
    *(int64_t *)out = sqlite3_column_int64(s, 0);
    return 0;
}

int sq_run_id(struct store *st, enum sid id, struct err *e, const char *op)
{
    sqlite3_stmt *s = sq_stmt(st, id, e);
    return s ? sq_run(st, s, e, op) : -1;
}

int sq_exec(struct store *st, const char *sql, struct err *e, const char *op)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: %s: %s", op, msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Bind at most max bytes of s, cut at a UTF-8 character boundary; NULL -> NULL. */
int sq_bind_trunc(sqlite3_stmt *s, int i, const char *v, size_t max)
{
    if (!v)
        return sqlite3_bind_null(s, i);
    size_t n = strnlen(v, max + 1);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)v[n] & 0xC0) == 0x80)
            n--;
    }
    return sqlite3_bind_text(s, i, v, (int)n, SQLITE_STATIC);
}

int sq_bind_str(sqlite3_stmt *s, int i, const char *v)
{
    return sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

void sq_col_copy(sqlite3_stmt *s, int i, char *dst, size_t size)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    size_t n = t ? (size_t)sqlite3_column_bytes(s, i) : 0;
    if (n >= size) {
        n = size - 1;
        while (n > 0 && (t[n] & 0xC0) == 0x80)
            n--;
    }
    if (n)
        memcpy(dst, t, n);
    dst[n] = '\0';
}

/* ---- transactions ------------------------------------------------------ */

int sq_tx_begin(struct store *st, struct err *e, const char *op)
{
    if (!st->batch) {
        return sq_run_id(st, S_BEGIN, e, op);
    }
    if (st->batch_lost)
        return err_set(e, ERR_INTERNAL,
                       "store: %s: the batch was rolled back after an earlier error", op);
    if (!st->batch_tx) {
        if (sq_run_id(st, S_BEGIN, e, op) < 0)
            return -1;
        st->batch_tx = true;
    }
    return sq_run_id(st, S_SAVEPOINT, e, op);
}

int sq_tx_commit(struct store *st, struct err *e, const char *op)
{
    if (st->batch)
        return sq_run_id(st, S_RELEASE, e, op);
    if (sq_run_id(st, S_COMMIT, e, op) < 0) {
        if (!sqlite3_get_autocommit(st->db))
            sq_run_id(st, S_ROLLBACK, NULL, op);
        return -1;
    }
    return 0;
}

void sq_tx_rollback(struct store *st)
{
    if (sqlite3_get_autocommit(st->db)) {
        /* nothing open: the database already rolled everything back */
        if (st->batch && st->batch_tx) {
            st->batch_lost = true;
            st->batch_tx = false;
        }
        return;
    }
    if (st->batch) {
        sq_run_id(st, S_ROLLBACK_TO, NULL, "rollback");
        sq_run_id(st, S_RELEASE, NULL, "rollback");
    } else {
        sq_run_id(st, S_ROLLBACK, NULL, "rollback");
    }
}

int sq_batch_begin(struct store *st, struct err *e)
{
    if (st->batch)
        return err_set(e, ERR_USAGE, "store: batch begin: a batch is already open");
    st->batch = true;
    st->batch_tx = false;
    st->batch_lost = false;
    return 0;
}

int sq_batch_commit(struct store *st, struct err *e)
{
    if (!st->batch)
        return err_set(e, ERR_USAGE, "store: batch commit: no batch is open");
    bool lost = st->batch_lost, open = st->batch_tx;
    st->batch = st->batch_tx = st->batch_lost = false;
    if (lost)
        return err_set(e, ERR_INTERNAL,
                       "store: batch commit: the batch was rolled back after an earlier error");
    if (!open)
        return 0;
    if (sq_run_id(st, S_COMMIT, e, "batch commit") < 0) {
        if (!sqlite3_get_autocommit(st->db))
            sq_run_id(st, S_ROLLBACK, NULL, "batch rollback");
        return -1;
    }
    return 0;
}

void sq_batch_rollback(struct store *st)
{
    if (!st || !st->batch)
        return;
    if (st->batch_tx && !sqlite3_get_autocommit(st->db))
        sq_run_id(st, S_ROLLBACK, NULL, "batch rollback");
    st->batch = st->batch_tx = st->batch_lost = false;
}

/* ---- open / close ------------------------------------------------------ */

int sq_make_dirs(const char *dir, struct err *e)
{
    char p[PATH_BYTES];
    int n = snprintf(p, sizeof p, "%s", dir);
    if (n < 0 || (size_t)n >= sizeof p)
        return err_set(e, ERR_LIMIT, "store: state_dir is longer than %d bytes", PATH_BYTES - 1);
    for (char *c = p + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
            return err_set(e, ERR_INTERNAL, "store: cannot create directory %s: %s", p,
                           strerror(errno));
        *c = '/';
    }
    if (mkdir(p, 0700) < 0 && errno != EEXIST)
        return err_set(e, ERR_INTERNAL, "store: cannot create state_dir %s: %s", p,
                       strerror(errno));
    struct stat sb;
    if (stat(p, &sb) < 0)
        return err_set(e, ERR_INTERNAL, "store: state_dir %s: %s", p, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return err_set(e, ERR_INTERNAL, "store: state_dir %s is not a directory", p);
    return 0;
}

static int newer_schema(struct store *st, int version, struct err *e)
{
    return err_set(e, ERR_INTERNAL,
                   "store: %s has schema version %d, newer than this build supports (%d);"
                   " run a newer pop3bridge",
                   st->path, version, STORE_SCHEMA_VERSION);
}

/* A row of PRAGMA foreign_key_check: the table holding a lost reference. */
static int fk_row(sqlite3_stmt *s, void *out, struct err *e)
{
    (void)e;
    sq_col_copy(s, 0, out, 64);
    return 0;
}

/* PRAGMA foreign_key_check finds nothing: 0, else -1 (ERR_INTERNAL). */
static int fk_check(struct store *st, struct err *e)
{
    const char *op = "migrate: foreign key check";
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, "PRAGMA foreign_key_check", -1, &s, NULL) != SQLITE_OK)
        return sq_dberr(st, e, op);
    char table[64] = "";
    int r = sq_one(st, s, fk_row, table, e, op);
    sqlite3_finalize(s);
    if (r == 0)
        return err_set(e, ERR_INTERNAL, "store: migrate: a row of %s lost its reference", table);
    return r == STORE_NOTFOUND ? 0 : -1;
}

static int migrate_locked(struct store *st, struct err *e);

static int migrate(struct store *st, struct err *e)
{
    /* the common case, an up-to-date schema, needs no write lock: opening a
     * handle never waits for another handle's open batch */
    int version = sq_schema_version(st, e);
    if (version < 0)
        return -1;
    if (version == STORE_SCHEMA_VERSION)
        return 0;
    if (version > STORE_SCHEMA_VERSION)
        return newer_schema(st, version, e);
    /* a migration may rebuild a table others reference (schema 7): foreign
     * keys are off meanwhile (the pragma is a no-op inside a transaction),
     * and checked before the commit */
    if (sq_exec(st, "PRAGMA foreign_keys = OFF", e, "migrate") < 0)
        return -1;
    int rc = migrate_locked(st, e);
    if (sq_exec(st, "PRAGMA foreign_keys = ON", rc < 0 ? NULL : e, "migrate") < 0)
        return -1;
    return rc;
}

static int migrate_locked(struct store *st, struct err *e)
{
    if (sq_exec(st, "BEGIN IMMEDIATE", e, "migrate") < 0)
        return -1;
    int version = sq_schema_version(st, e); /* again, under the lock */
    if (version < 0 || version > STORE_SCHEMA_VERSION) {
        if (version > STORE_SCHEMA_VERSION)
            newer_schema(st, version, e);
        sq_exec(st, "ROLLBACK", NULL, "migrate");
        return -1;
    }
    for (int v = version; v < STORE_SCHEMA_VERSION; v++) {
        char set[64];
        int n = snprintf(set, sizeof set, "PRAGMA user_version = %d", v + 1);
        if (n < 0 || (size_t)n >= sizeof set || sq_exec(st, migrations[v], e, "migrate") < 0 ||
            sq_exec(st, set, e, "migrate") < 0) {
            if (e && e->kind == ERR_NONE)
                err_set(e, ERR_INTERNAL, "store: migrate: bad version statement");
            err_prefix(e, "schema version %d", v + 1);
            sq_exec(st, "ROLLBACK", NULL, "migrate");
            return -1;
        }
    }
    if (fk_check(st, e) < 0 || sq_exec(st, "COMMIT", e, "migrate") < 0) {
        sq_exec(st, "ROLLBACK", NULL, "migrate");
        return -1;
    }
    return 0;
}

int sq_conn_setup(sqlite3 *db)
{
    sqlite3_extended_result_codes(db, 1);
    return sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
}

struct store *store_sqlite_open(const char *state_dir, struct err *e)
{
    if (!state_dir || !*state_dir) {
        err_set(e, ERR_USAGE, "store: state_dir is empty");
        return NULL;
    }
    if (!sqlite3_threadsafe()) {
        err_set(e, ERR_INTERNAL, "store: SQLite was built without thread support");
        return NULL;
    }
    struct store *st = calloc(1, sizeof *st);
    if (!st) {
        err_set(e, ERR_INTERNAL, "store: out of memory");
        return NULL;
    }
    st->hdr.ops = &store_sqlite_ops;
    int n1 = snprintf(st->dir, sizeof st->dir, "%s", state_dir);
    int n2 = snprintf(st->path, sizeof st->path, "%s/%s", state_dir, STORE_DB_FILE);
    if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof st->dir || (size_t)n2 >= sizeof st->path) {
        err_set(e, ERR_LIMIT, "store: state_dir is longer than %d bytes",
                (int)(PATH_BYTES - sizeof STORE_DB_FILE - 1));
        free(st);
        return NULL;
    }
    if (sq_make_dirs(state_dir, e) < 0) {
        free(st);
        return NULL;
    }
    int rc = sqlite3_open_v2(st->path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: cannot open %s: %s", st->path,
                st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sq_conn_setup(st->db);
    /* journal_mode answers with the mode in force: it must say "wal".
     * Switching a fresh file to WAL needs an exclusive lock and does not
     * always go through the busy handler, so wait here, bounded. */
    sqlite3_stmt *s = NULL;
    rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
    for (int tries = 0; rc == SQLITE_OK; tries++) {
        rc = sqlite3_step(s);
        int base = rc & 0xff;
        if ((base != SQLITE_BUSY && base != SQLITE_LOCKED) ||
            tries >= STORE_BUSY_TIMEOUT_MS / WAL_RETRY_MS)
            break;
        sqlite3_reset(s);
        sqlite3_sleep(WAL_RETRY_MS);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_ROW) {
        err_set(e, ERR_INTERNAL, "store: cannot open %s: %s", st->path, sqlite3_errmsg(st->db));
        sqlite3_finalize(s);
        goto fail;
    }
    const char *mode = (const char *)sqlite3_column_text(s, 0);
    if (!mode || strcmp(mode, "wal") != 0) {
        err_set(e, ERR_INTERNAL, "store: %s: cannot use WAL mode (got \"%s\")", st->path,
                mode ? mode : "");
        sqlite3_finalize(s);
        goto fail;
    }
    sqlite3_finalize(s);
    if (sq_exec(st, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                 " PRAGMA journal_size_limit = 67108864; PRAGMA temp_store = MEMORY;",
             e, "configure") < 0)
        goto fail;
    if (migrate(st, e) < 0)
        goto fail;
    if (sq_exec(st, "CREATE TEMP TABLE listed(uidl TEXT PRIMARY KEY) WITHOUT ROWID;"
                 " CREATE TEMP TABLE purge(id INTEGER PRIMARY KEY);",
             e, "open") < 0)
        goto fail;
    return st;
fail:
    if (e)
        err_prefix(e, "store_open");
    sq_close(st);
    return NULL;
}

void sq_close(struct store *st)
{
    if (!st)
        return;
    sq_batch_rollback(st);
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    sqlite3_close(st->db);
    free(st);
}

int sq_schema_version(struct store *st, struct err *e)
{
    sqlite3_stmt *s = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
        return sq_dberr(st, e, "schema version");
    int r = sq_one(st, s, sq_row_i64, &v, e, "schema version");
    sqlite3_finalize(s);
    if (r == STORE_NOTFOUND)
        return err_set(e, ERR_INTERNAL, "store: schema version: no answer from %s", st->path);
    return r < 0 ? -1 : (int)v;
}

/* ---- the backend's table ------------------------------------------------------ */

#define SQ_OP(ret, name, params, args) .name = sq_##name,
const struct store_ops store_sqlite_ops = {
    .backend = "sqlite",
    STORE_CALLS(SQ_OP)
    .close = sq_close,
    .batch_rollback = sq_batch_rollback,
    .spool_dir = sq_spool_dir,
    .msg_store = sq_msg_store,
    .body_read = sq_body_read,
    .body_close = sq_body_close,
};

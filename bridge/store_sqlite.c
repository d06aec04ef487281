/*
 * store_sqlite — the store (include/store.h) on SQLite.
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
 * Schema (version 7, STORE_SCHEMA_VERSION):
 *   accounts(name PK, state, last_error, last_attempt_at, last_success_at,
 *            backoff_until)
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

#define PATH_BYTES 4096
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

enum sid {
    S_UIDLS_EACH,
    S_UIDL_GET,
    S_UIDL_INS_IGNORED,
    S_DELETABLE,
    S_MARK_DELETED,
    S_LISTED_CLEAR,
    S_LISTED_INS,
    S_FORGET,
    S_MSG_INS,
    S_BODY_INS,
    S_UIDL_INS_STORED,
    S_DELIV_INS,
    S_MSG_GET,
    S_BODY_LEN,
    S_DUE,
    S_DUE_WH,
    S_LEASE,
    S_RENEW,
    S_RELEASE_ALL,
    S_RELEASE_ONE,
    S_DELIV_STATUS,
    S_DELIV_UPDATE,
    S_ATTEMPT_INS,
    S_MSG_UNDELIVERED,
    S_MSG_SET_DELIVERED,
    S_UIDL_SET_DELIVERED,
    S_RETRY,
    S_DELIV_GET,
    S_ATTEMPTS,
    S_LIST_ALL,
    S_LIST_S,
    S_LIST_A,
    S_LIST_SA,
    S_COUNTS,
    S_WH_DISABLE,
    S_WH_ENABLE_ALL,
    S_WH_GET,
    S_ACC_GET,
    S_ACC_SET,
    S_ACC_LEASE,
    S_ACC_RENEW,
    S_ACC_RELEASE_ALL,
    S_ACC_STORED,
    S_ACC_PENDING,
    S_PURGE_CLEAR,
    S_PURGE_SEL,
    S_PURGE_BODIES,
    S_PURGE_MARK,
    S_EVPURGE_SEL,
    S_EVPURGE_ATTEMPTS,
    S_EVPURGE_DELIVERIES,
    S_EVPURGE_EVENTS,
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_SAVEPOINT,
    S_RELEASE,
    S_ROLLBACK_TO,
    S_NEXT_DUE,
    S_OA_GET,
    S_OA_GRANT,
    S_OA_CREATE,
    S_OA_LEASE,
    S_OA_REFRESHED,
    S_OA_FAILED,
    S_OA_RELEASE,
    S_EVENT_INS,
    S_EVENT_DELIV_INS,
    S_EVENT_GET,
    S_DROP,
    S_RETRY_BULK,
    S_DUP_FIND,
    S_EVENT_LAST,
    S_WH_ATTEMPTS,
    S_WH_LATENCY,
    S_WH_LAST_ERROR,
    S_HOURLY_MSGS,
    S_HOURLY_ATTEMPTS,
    S_LINK_GET,
    S_LINK_CREATE,
    S_LINK_SET,
    S_COUNT
};

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
    [S_ACC_GET] = "SELECT state, last_error, last_attempt_at, last_success_at, backoff_until"
                  " FROM accounts WHERE name = ?1",
    [S_ACC_SET] = "INSERT INTO accounts(name, state, last_error, last_attempt_at,"
                  " last_success_at, backoff_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                  " ON CONFLICT(name) DO UPDATE SET state = excluded.state,"
                  " last_error = excluded.last_error, last_attempt_at = excluded.last_attempt_at,"
                  " last_success_at = excluded.last_success_at,"
                  " backoff_until = excluded.backoff_until",
    [S_ACC_LEASE] = "INSERT INTO accounts(name, state, lease_owner, lease_until)"
                    " VALUES (?1, 'idle', ?2, ?3) ON CONFLICT(name) DO UPDATE SET"
                    " lease_owner = excluded.lease_owner, lease_until = excluded.lease_until"
                    " WHERE accounts.lease_owner IS NULL OR accounts.lease_owner = ?2"
                    " OR accounts.lease_until <= ?4",
    [S_ACC_RENEW] = "UPDATE accounts SET lease_until = ?2 WHERE lease_owner = ?1",
    [S_ACC_RELEASE_ALL] = "UPDATE accounts SET lease_owner = NULL, lease_until = 0"
                          " WHERE lease_owner = ?1",
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

/* the calls behind include/store.h (bridge/store.c dispatches to them) */
#define SQ_DECL(ret, name, params, args) static ret sq_##name params;
STORE_CALLS(SQ_DECL)
static void sq_close(struct store *st);
static void sq_batch_rollback(struct store *st);
static int sq_body_read(struct store_body *b, uint64_t offset, void *buf, size_t len,
                        size_t *got, struct err *e);
static void sq_body_close(struct store_body *b);

struct store {
    struct store_hdr hdr;       /* first: store_sqlite_ops */
    sqlite3 *db;
    char path[PATH_BYTES];      /* the database file */
    char dir[PATH_BYTES];       /* state_dir, for spool files */
    sqlite3_stmt *stmt[S_COUNT];
    bool batch;                 /* store_batch_begin called */
    bool batch_tx;              /* the batch's transaction is open */
    bool batch_lost;            /* the database rolled the batch back */
};

struct store_body {
    struct store_hdr hdr;
    sqlite3 *db;
    int64_t id;
};

/* ---- small helpers ----------------------------------------------------- */

static int dberr(struct store *st, struct err *e, const char *op)
{
    return err_set(e, ERR_INTERNAL, "store: %s: %s", op, sqlite3_errmsg(st->db));
}

/* A cached statement, reset and with no bindings; NULL with *e on error. */
static sqlite3_stmt *S(struct store *st, enum sid id, struct err *e)
{
    sqlite3_stmt *s = st->stmt[id];
    if (!s) {
        if (sqlite3_prepare_v3(st->db, sql_text[id], -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) !=
            SQLITE_OK) {
            dberr(st, e, "prepare");
            return NULL;
        }
        st->stmt[id] = s;
    }
    return s;
}

static void done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* Step a statement that returns no rows; reset it.  0 or -1. */
static int run(struct store *st, sqlite3_stmt *s, struct err *e, const char *op)
{
    int rc = sqlite3_step(s);
    int r = 0;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        r = dberr(st, e, op);
    done(s);
    return r;
}

static int run_id(struct store *st, enum sid id, struct err *e, const char *op)
{
    sqlite3_stmt *s = S(st, id, e);
    return s ? run(st, s, e, op) : -1;
}

static int exec(struct store *st, const char *sql, struct err *e, const char *op)
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
static int bind_trunc(sqlite3_stmt *s, int i, const char *v, size_t max)
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

static int bind_str(sqlite3_stmt *s, int i, const char *v)
{
    return sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

static void col_copy(sqlite3_stmt *s, int i, char *dst, size_t size)
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

static int tx_begin(struct store *st, struct err *e, const char *op)
{
    if (!st->batch) {
        return run_id(st, S_BEGIN, e, op);
    }
    if (st->batch_lost)
        return err_set(e, ERR_INTERNAL,
                       "store: %s: the batch was rolled back after an earlier error", op);
    if (!st->batch_tx) {
        if (run_id(st, S_BEGIN, e, op) < 0)
            return -1;
        st->batch_tx = true;
    }
    return run_id(st, S_SAVEPOINT, e, op);
}

static int tx_commit(struct store *st, struct err *e, const char *op)
{
    if (st->batch)
        return run_id(st, S_RELEASE, e, op);
    if (run_id(st, S_COMMIT, e, op) < 0) {
        if (!sqlite3_get_autocommit(st->db))
            run_id(st, S_ROLLBACK, NULL, op);
        return -1;
    }
    return 0;
}

static void tx_rollback(struct store *st)
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
        run_id(st, S_ROLLBACK_TO, NULL, "rollback");
        run_id(st, S_RELEASE, NULL, "rollback");
    } else {
        run_id(st, S_ROLLBACK, NULL, "rollback");
    }
}

static int sq_batch_begin(struct store *st, struct err *e)
{
    if (st->batch)
        return err_set(e, ERR_USAGE, "store: batch begin: a batch is already open");
    st->batch = true;
    st->batch_tx = false;
    st->batch_lost = false;
    return 0;
}

static int sq_batch_commit(struct store *st, struct err *e)
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
    if (run_id(st, S_COMMIT, e, "batch commit") < 0) {
        if (!sqlite3_get_autocommit(st->db))
            run_id(st, S_ROLLBACK, NULL, "batch rollback");
        return -1;
    }
    return 0;
}

static void sq_batch_rollback(struct store *st)
{
    if (!st || !st->batch)
        return;
    if (st->batch_tx && !sqlite3_get_autocommit(st->db))
        run_id(st, S_ROLLBACK, NULL, "batch rollback");
    st->batch = st->batch_tx = st->batch_lost = false;
}

/* ---- open / close ------------------------------------------------------ */

static int make_dirs(const char *dir, struct err *e)
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

/* PRAGMA foreign_key_check finds nothing: 0, else -1 (ERR_INTERNAL). */
static int fk_check(struct store *st, struct err *e)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, "PRAGMA foreign_key_check", -1, &s, NULL) != SQLITE_OK)
        return dberr(st, e, "migrate: foreign key check");
    int rc = sqlite3_step(s);
    char table[64] = "";
    if (rc == SQLITE_ROW)
        snprintf(table, sizeof table, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    if (rc == SQLITE_ROW)
        return err_set(e, ERR_INTERNAL, "store: migrate: a row of %s lost its reference", table);
    return rc == SQLITE_DONE ? 0 : dberr(st, e, "migrate: foreign key check");
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
    if (exec(st, "PRAGMA foreign_keys = OFF", e, "migrate") < 0)
        return -1;
    int rc = migrate_locked(st, e);
    if (exec(st, "PRAGMA foreign_keys = ON", rc < 0 ? NULL : e, "migrate") < 0)
        return -1;
    return rc;
}

static int migrate_locked(struct store *st, struct err *e)
{
    if (exec(st, "BEGIN IMMEDIATE", e, "migrate") < 0)
        return -1;
    int version = sq_schema_version(st, e); /* again, under the lock */
    if (version < 0 || version > STORE_SCHEMA_VERSION) {
        if (version > STORE_SCHEMA_VERSION)
            newer_schema(st, version, e);
        exec(st, "ROLLBACK", NULL, "migrate");
        return -1;
    }
    for (int v = version; v < STORE_SCHEMA_VERSION; v++) {
        char set[64];
        int n = snprintf(set, sizeof set, "PRAGMA user_version = %d", v + 1);
        if (n < 0 || (size_t)n >= sizeof set || exec(st, migrations[v], e, "migrate") < 0 ||
            exec(st, set, e, "migrate") < 0) {
            if (e && e->kind == ERR_NONE)
                err_set(e, ERR_INTERNAL, "store: migrate: bad version statement");
            err_prefix(e, "schema version %d", v + 1);
            exec(st, "ROLLBACK", NULL, "migrate");
            return -1;
        }
    }
    if (fk_check(st, e) < 0 || exec(st, "COMMIT", e, "migrate") < 0) {
        exec(st, "ROLLBACK", NULL, "migrate");
        return -1;
    }
    return 0;
}

static int conn_setup(sqlite3 *db)
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
    if (make_dirs(state_dir, e) < 0) {
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
    conn_setup(st->db);
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
    if (exec(st, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                 " PRAGMA journal_size_limit = 67108864; PRAGMA temp_store = MEMORY;",
             e, "configure") < 0)
        goto fail;
    if (migrate(st, e) < 0)
        goto fail;
    if (exec(st, "CREATE TEMP TABLE listed(uidl TEXT PRIMARY KEY) WITHOUT ROWID;"
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

static void sq_close(struct store *st)
{
    if (!st)
        return;
    sq_batch_rollback(st);
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    sqlite3_close(st->db);
    free(st);
}

static int sq_schema_version(struct store *st, struct err *e)
{
    sqlite3_stmt *s = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int(s, 0);
    else
        dberr(st, e, "schema version");
    sqlite3_finalize(s);
    return v;
}

/* ---- UIDLs ------------------------------------------------------------- */

static int uidls_iter(struct store *st, sqlite3_stmt *s, store_uidl_cb cb, void *ctx,
                      struct err *e, const char *op)
{
    int rc, r = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *u = (const char *)sqlite3_column_text(s, 0);
        if (cb(ctx, u ? u : "", (enum store_uidl_state)sqlite3_column_int(s, 1),
               sqlite3_column_int64(s, 2), e) != 0) {
            r = store_cb_stop(e);
            break;
        }
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = dberr(st, e, op);
    done(s);
    return r;
}

static int sq_uidls_each(struct store *st, const char *account, store_uidl_cb cb, void *ctx,
                     struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    err_clear(e);
    sqlite3_stmt *s = S(st, S_UIDLS_EACH, e);
    if (!s)
        return -1;
    bind_str(s, 1, account);
    return uidls_iter(st, s, cb, ctx, e, "list UIDLs");
}

static int sq_uidl_get(struct store *st, const char *account, const char *uidl,
                   enum store_uidl_state *state, int64_t *msg_id, struct err *e)
{
    if (store_check_name("account", account, e) < 0 || store_check_uidl(uidl, e) < 0)
        return -1;
    sqlite3_stmt *s = S(st, S_UIDL_GET, e);
    if (!s)
        return -1;
    bind_str(s, 1, account);
    bind_str(s, 2, uidl);
    int rc = sqlite3_step(s), r;
    if (rc == SQLITE_ROW) {
        *state = (enum store_uidl_state)sqlite3_column_int(s, 0);
        if (msg_id)
            *msg_id = sqlite3_column_int64(s, 1);
        r = 0;
    } else if (rc == SQLITE_DONE) {
        r = STORE_NOTFOUND;
    } else {
        r = dberr(st, e, "get UIDL");
    }
    done(s);
    return r;
}

static int sq_uidls_record_ignored(struct store *st, const char *account,
                               const char *const *uidls, size_t n, int64_t now,
                               struct err *e)
{
    if (store_check_account_uidls(account, uidls, n, e) < 0)
        return -1;
    if (n == 0)
        return 0;
    const char *op = "record ignored UIDLs";
    sqlite3_stmt *s = S(st, S_UIDL_INS_IGNORED, e);
    if (!s || tx_begin(st, e, op) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        bind_str(s, 1, account);
        bind_str(s, 2, uidls[i]);
        sqlite3_bind_int64(s, 3, now);
        if (run(st, s, e, op) < 0) {
            tx_rollback(st);
            return -1;
        }
    }
    if (tx_commit(st, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    return 0;
}

static int sq_uidls_deletable(struct store *st, const char *account, bool delete_delivered,
                          int64_t delete_after_ms, int64_t now, store_uidl_cb cb, void *ctx,
                          struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    err_clear(e);
    sqlite3_stmt *s = S(st, S_DELETABLE, e);
    if (!s)
        return -1;
    bind_str(s, 1, account);
    sqlite3_bind_int(s, 2, delete_delivered ? 1 : 0);
    sqlite3_bind_int64(s, 3, delete_after_ms > 0 ? delete_after_ms : 0);
    sqlite3_bind_int64(s, 4, now);
    return uidls_iter(st, s, cb, ctx, e, "list deletable UIDLs");
}

static int sq_uidls_mark_deleted(struct store *st, const char *account,
                             const char *const *uidls, size_t n, struct err *e)
{
    if (store_check_account_uidls(account, uidls, n, e) < 0)
        return -1;
    if (n == 0)
        return 0;
    const char *op = "mark UIDLs deleted";
    sqlite3_stmt *s = S(st, S_MARK_DELETED, e);
    if (!s || tx_begin(st, e, op) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        bind_str(s, 1, account);
        bind_str(s, 2, uidls[i]);
        if (run(st, s, e, op) < 0) {
            tx_rollback(st);
            return -1;
        }
    }
    if (tx_commit(st, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    return 0;
}

static int sq_uidls_forget_vanished(struct store *st, const char *account,
                                const char *const *listed, size_t n, int64_t *forgotten,
                                struct err *e)
{
    if (store_check_account_uidls(account, listed, n, e) < 0)
        return -1;
    const char *op = "forget vanished UIDLs";
    sqlite3_stmt *ins = S(st, S_LISTED_INS, e), *del = S(st, S_FORGET, e);
    if (!ins || !del || tx_begin(st, e, op) < 0)
        return -1;
    if (run_id(st, S_LISTED_CLEAR, e, op) < 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        bind_str(ins, 1, listed[i]);
        if (run(st, ins, e, op) < 0)
            goto fail;
    }
    bind_str(del, 1, account);
    if (run(st, del, e, op) < 0)
        goto fail;
    int64_t count = sqlite3_changes64(st->db);
    if (run_id(st, S_LISTED_CLEAR, e, op) < 0 || tx_commit(st, e, op) < 0)
        goto fail;
    if (forgotten)
        *forgotten = count;
    return 0;
fail:
    tx_rollback(st);
    return -1;
}

/* ---- storing a message ------------------------------------------------- */

/* Copy the spool file into the zero-filled blob of message id. */
static int body_from_file(struct store *st, struct store_msg *m, int64_t id, struct err *e)
{
    sqlite3_blob *b = NULL;
    if (sqlite3_blob_open(st->db, "main", "bodies", "raw", id, 1, &b) != SQLITE_OK) {
        dberr(st, e, "open body blob");
        sqlite3_blob_close(b);
        return -1;
    }
    unsigned char *buf = malloc(STORE_IO_CHUNK);
    if (!buf) {
        sqlite3_blob_close(b);
        return err_set(e, ERR_INTERNAL, "store: out of memory");
    }
    int r = 0;
    uint64_t off = 0;
    while (off < m->sp.size) {
        size_t want = m->sp.size - off < STORE_IO_CHUNK ? (size_t)(m->sp.size - off) : STORE_IO_CHUNK;
        ssize_t got = pread(m->sp.fd, buf, want, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            r = err_set(e, ERR_INTERNAL, "store: cannot read spool file in %s: %s", st->dir,
                        got < 0 ? strerror(errno) : "unexpected end of file");
            break;
        }
        if (sqlite3_blob_write(b, buf, (int)got, (int)off) != SQLITE_OK) {
            r = dberr(st, e, "write body blob");
            break;
        }
        off += (uint64_t)got;
    }
    free(buf);
    if (sqlite3_blob_close(b) != SQLITE_OK && r == 0)
        r = dberr(st, e, "close body blob");
    return r;
}

/* The first message of account with this Message-ID stored since `since`
 * (not itself a duplicate): its id, or 0. */
static int find_duplicate(struct store *st, const char *account, const char *message_id,
                          int64_t since, int64_t *dup, struct err *e)
{
    *dup = 0;
    sqlite3_stmt *s = S(st, S_DUP_FIND, e);
    if (!s)
        return -1;
    bind_str(s, 1, account);
    bind_trunc(s, 2, message_id, STORE_META_MAX); /* as it was stored */
    sqlite3_bind_int64(s, 3, since);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW)
        *dup = sqlite3_column_int64(s, 0);
    else if (rc != SQLITE_DONE)
        r = dberr(st, e, "find duplicate");
    done(s);
    return r;
}

static int finish_tx(struct store *st, struct store_msg *m, const struct store_msg_meta *meta,
                     const char *const *webhooks, size_t n_webhooks, int64_t now,
                     const char *sha_hex, int64_t *id_out, int64_t *dup_out, struct err *e)
{
    const char *op = "store message";
    int64_t dup = 0, since = 0;
    if (store_dedupe_since(meta, now, &since) &&
        find_duplicate(st, m->account, meta->message_id, since, &dup, e) < 0)
        return -1;
    if (dup)
        n_webhooks = 0; /* recorded, not delivered: done at once */
    *dup_out = dup;
    sqlite3_stmt *s = S(st, S_MSG_INS, e);
    if (!s)
        return -1;
    if (dup)
        sqlite3_bind_int64(s, 14, dup);
    bind_str(s, 1, m->account);
    bind_str(s, 2, m->uidl);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)m->sp.size);
    bind_str(s, 4, sha_hex);
    sqlite3_bind_int64(s, 5, now);
    if (meta) {
        bind_trunc(s, 6, meta->subject, STORE_META_MAX);
        bind_trunc(s, 7, meta->from, STORE_META_MAX);
        bind_trunc(s, 8, meta->message_id, STORE_META_MAX);
        bind_trunc(s, 9, meta->date, STORE_META_MAX);
    }
    bind_str(s, 11, meta && meta->kind ? meta->kind : STORE_KIND_MESSAGE);
    sqlite3_bind_int64(s, 12, meta ? (sqlite3_int64)meta->declared_size : 0);
    char key[STORE_KEY_HEX + 1];
    if (store_new_event_key(key, e) < 0)
        return -1;
    bind_str(s, 13, key);
    if (n_webhooks == 0)
        sqlite3_bind_int64(s, 10, now);
    if (run(st, s, e, op) < 0)
        return -1;
    int64_t id = sqlite3_last_insert_rowid(st->db);

    if (!(s = S(st, S_BODY_INS, e)))
        return -1;
    sqlite3_bind_int64(s, 1, id);
    if (m->sp.fd < 0)
        sqlite3_bind_blob(s, 2, m->sp.mem ? (const void *)m->sp.mem : "", (int)m->sp.len,
                          SQLITE_STATIC);
    else
        sqlite3_bind_zeroblob64(s, 2, m->sp.size);
    if (run(st, s, e, op) < 0)
        return -1;
    if (m->sp.fd >= 0 && body_from_file(st, m, id, e) < 0)
        return -1;

    if (!(s = S(st, S_UIDL_INS_STORED, e)))
        return -1;
    bind_str(s, 1, m->account);
    bind_str(s, 2, m->uidl);
    sqlite3_bind_int(s, 3, n_webhooks ? STORE_UIDL_STORED : STORE_UIDL_DELIVERED);
    sqlite3_bind_int64(s, 4, id);
    sqlite3_bind_int64(s, 5, now);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) {
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            err_set(e, ERR_USAGE, "store: UIDL is already known for account %s", m->account);
        else
            dberr(st, e, op);
        done(s);
        return -1;
    }
    done(s);

    if (!(s = S(st, S_DELIV_INS, e)))
        return -1;
    for (size_t i = 0; i < n_webhooks; i++) {
        sqlite3_bind_int64(s, 1, id);
        bind_str(s, 2, m->account);
        bind_str(s, 3, webhooks[i]);
        sqlite3_bind_int64(s, 4, now);
        if (run(st, s, e, op) < 0)
            return -1;
    }
    *id_out = id;
    return 0;
}

static int sq_msg_store(struct store_msg *m, const struct store_msg_meta *meta,
                        const char *const *webhooks, size_t n_webhooks, int64_t now,
                        const char *sha_hex, int64_t *id, int64_t *dup, struct err *e)
{
    struct store *st = m->st;
    if (tx_begin(st, e, "store message") < 0)
        return -1;
    if (finish_tx(st, m, meta, webhooks, n_webhooks, now, sha_hex, id, dup, e) < 0 ||
        tx_commit(st, e, "store message") < 0) {
        tx_rollback(st);
        return -1;
    }
    return 0;
}

static const char *sq_spool_dir(const struct store *st)
{
    return st->dir;
}

/* ---- reading a message ------------------------------------------------- */

static int sq_msg_get(struct store *st, int64_t id, struct store_msg_info *out, struct err *e)
{
    sqlite3_stmt *s = S(st, S_MSG_GET, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof *out);
        out->id = sqlite3_column_int64(s, 0);
        col_copy(s, 1, out->account, sizeof out->account);
        col_copy(s, 2, out->uidl, sizeof out->uidl);
        out->size = (uint64_t)sqlite3_column_int64(s, 3);
        col_copy(s, 4, out->sha256, sizeof out->sha256);
        out->received_at = sqlite3_column_int64(s, 5);
        out->delivered_at = sqlite3_column_int64(s, 6);
        out->body_purged_at = sqlite3_column_int64(s, 7);
        col_copy(s, 8, out->subject, sizeof out->subject);
        col_copy(s, 9, out->from, sizeof out->from);
        col_copy(s, 10, out->message_id, sizeof out->message_id);
        col_copy(s, 11, out->date, sizeof out->date);
        col_copy(s, 12, out->kind, sizeof out->kind);
        out->declared_size = (uint64_t)sqlite3_column_int64(s, 13);
        col_copy(s, 14, out->key, sizeof out->key);
        out->duplicate_of = sqlite3_column_int64(s, 15);
    } else if (rc == SQLITE_DONE) {
        r = STORE_NOTFOUND;
    } else {
        r = dberr(st, e, "get message");
    }
    done(s);
    return r;
}

/* Length of the body of message id; STORE_NOTFOUND if none. */
static int body_len(struct store *st, int64_t id, uint64_t *len, struct err *e)
{
    sqlite3_stmt *s = S(st, S_BODY_LEN, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW)
        *len = (uint64_t)sqlite3_column_int64(s, 0);
    else if (rc == SQLITE_DONE)
        r = STORE_NOTFOUND;
    else
        r = dberr(st, e, "get body length");
    done(s);
    return r;
}

static int sq_msg_stream(struct store *st, int64_t id, store_sink_cb sink, void *ctx,
                     struct err *e)
{
    err_clear(e);
    sqlite3_blob *b = NULL;
    int rc = sqlite3_blob_open(st->db, "main", "bodies", "raw", id, 0, &b);
    if (rc != SQLITE_OK) {
        sqlite3_blob_close(b);
        /* "no such rowid" is SQLITE_ERROR; tell it apart from real failures */
        uint64_t len;
        int r = body_len(st, id, &len, e);
        if (r == STORE_NOTFOUND)
            return STORE_NOTFOUND;
        return r < 0 ? -1 : dberr(st, e, "open body blob");
    }
    unsigned char *buf = malloc(STORE_IO_CHUNK);
    if (!buf) {
        sqlite3_blob_close(b);
        return err_set(e, ERR_INTERNAL, "store: out of memory");
    }
    int total = sqlite3_blob_bytes(b), r = 0;
    for (int off = 0; off < total;) {
        int n = total - off < (int)STORE_IO_CHUNK ? total - off : (int)STORE_IO_CHUNK;
        if (sqlite3_blob_read(b, buf, n, off) != SQLITE_OK) {
            r = dberr(st, e, "read body blob");
            break;
        }
        if (sink(ctx, buf, (size_t)n, e) != 0) {
            r = store_cb_stop(e);
            break;
        }
        off += n;
    }
    free(buf);
    sqlite3_blob_close(b);
    return r;
}

static int sq_body_open(struct store *st, int64_t id, struct store_body **out, uint64_t *size,
                    struct err *e)
{
    *out = NULL;
    uint64_t len = 0;
    int r = body_len(st, id, &len, e);
    if (r != 0)
        return r;
    struct store_body *b = calloc(1, sizeof *b);
    if (!b)
        return err_set(e, ERR_INTERNAL, "store: out of memory");
    b->hdr.ops = &store_sqlite_ops;
    b->id = id;
    if (sqlite3_open_v2(st->path, &b->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: open body reader: %s",
                b->db ? sqlite3_errmsg(b->db) : "out of memory");
        sq_body_close(b);
        return -1;
    }
    conn_setup(b->db);
    if (size)
        *size = len;
    *out = b;
    return 0;
}

static int sq_body_read(struct store_body *b, uint64_t offset, void *buf, size_t len, size_t *got,
                    struct err *e)
{
    *got = 0;
    sqlite3_blob *h = NULL;
    if (sqlite3_blob_open(b->db, "main", "bodies", "raw", b->id, 0, &h) != SQLITE_OK) {
        char idbuf[STORE_ID_MAX];
        err_set(e, ERR_INTERNAL, "store: read body of %s: %s", store_msg_id_format(b->id, idbuf),
                sqlite3_errmsg(b->db));
        sqlite3_blob_close(h);
        return -1;
    }
    uint64_t total = (uint64_t)sqlite3_blob_bytes(h);
    int r = 0;
    if (offset < total) {
        uint64_t n = total - offset;
        if (n > len)
            n = len;
        if (sqlite3_blob_read(h, buf, (int)n, (int)offset) != SQLITE_OK)
            r = err_set(e, ERR_INTERNAL, "store: read body: %s", sqlite3_errmsg(b->db));
        else
            *got = (size_t)n;
    }
    sqlite3_blob_close(h);
    return r;
}

static void sq_body_close(struct store_body *b)
{
    if (!b)
        return;
    sqlite3_close(b->db);
    free(b);
}

/* ---- deliveries -------------------------------------------------------- */

static void delivery_row(sqlite3_stmt *s, struct store_delivery *d)
{
    d->id = sqlite3_column_int64(s, 0);
    d->msg_id = sqlite3_column_int64(s, 1);
    col_copy(s, 2, d->account, sizeof d->account);
    col_copy(s, 3, d->uidl, sizeof d->uidl);
    col_copy(s, 4, d->webhook, sizeof d->webhook);
    d->status = (enum store_dstatus)sqlite3_column_int(s, 5);
    d->attempts = sqlite3_column_int(s, 6);
    d->created_at = sqlite3_column_int64(s, 7);
    d->updated_at = sqlite3_column_int64(s, 8);
    d->next_attempt_at = sqlite3_column_int64(s, 9);
    d->delivered_at = sqlite3_column_int64(s, 10);
    d->last_http_status = sqlite3_column_int(s, 11);
    col_copy(s, 12, d->last_error, sizeof d->last_error);
    col_copy(s, 13, d->msg_key, sizeof d->msg_key);
    col_copy(s, 14, d->lease_owner, sizeof d->lease_owner);
    d->lease_until = sqlite3_column_int64(s, 15);
    d->event_id = sqlite3_column_int64(s, 16);
    col_copy(s, 17, d->event_type, sizeof d->event_type);
}

static int sq_delivery_lease_due(struct store *st, const char *owner, const char *webhook,
                             int64_t now, int64_t lease_ms, struct store_delivery *out,
                             size_t max, size_t *n, struct err *e)
{
    *n = 0;
    if (store_check_lease_due(owner, webhook, lease_ms, max, e) < 0)
        return -1;
    if (max == 0)
        return 0;
    const char *op = "lease due deliveries";
    sqlite3_stmt *sel = S(st, webhook ? S_DUE_WH : S_DUE, e), *lease = S(st, S_LEASE, e);
    if (!sel || !lease || tx_begin(st, e, op) < 0)
        return -1;
    sqlite3_bind_int64(sel, 1, now);
    sqlite3_bind_int64(sel, 2, (sqlite3_int64)max);
    if (webhook)
        bind_str(sel, 3, webhook);
    size_t k = 0;
    int rc = SQLITE_DONE;
    while (k < max && (rc = sqlite3_step(sel)) == SQLITE_ROW)
        delivery_row(sel, &out[k++]);
    if (k < max && rc != SQLITE_DONE) {
        dberr(st, e, op);
        done(sel);
        tx_rollback(st);
        return -1;
    }
    done(sel);
    for (size_t i = 0; i < k; i++) {
        sqlite3_bind_int64(lease, 1, out[i].id);
        bind_str(lease, 2, owner);
        sqlite3_bind_int64(lease, 3, now + lease_ms);
        if (run(st, lease, e, op) < 0) {
            tx_rollback(st);
            return -1;
        }
        snprintf(out[i].lease_owner, sizeof out[i].lease_owner, "%s", owner);
        out[i].lease_until = now + lease_ms;
    }
    if (tx_commit(st, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    *n = k;
    return 0;
}

static int write1(struct store *st, enum sid id, int64_t *changes, struct err *e, const char *op)
{
    sqlite3_stmt *s = S(st, id, e);
    if (!s || tx_begin(st, e, op) < 0)
        return -1;
    if (run(st, s, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    int64_t c = sqlite3_changes64(st->db);
    if (tx_commit(st, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    if (changes)
        *changes = c;
    return 0;
}

/* One UPDATE of the leases owner holds (renew, release all or one). */
static int lease_write(struct store *st, enum sid id, const char *owner, int64_t arg,
                       int64_t *changes, struct err *e, const char *op)
{
    if (store_check_owner(owner, e) < 0)
        return -1;
    sqlite3_stmt *s = S(st, id, e);
    if (!s || tx_begin(st, e, op) < 0)
        return -1;
    bind_str(s, 1, owner);
    if (id != S_RELEASE_ALL && id != S_ACC_RELEASE_ALL)
        sqlite3_bind_int64(s, 2, arg);
    if (run(st, s, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    int64_t c = sqlite3_changes64(st->db);
    if (tx_commit(st, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    if (changes)
        *changes = c;
    return 0;
}

static int sq_delivery_renew(struct store *st, const char *owner, int64_t now, int64_t lease_ms,
                         int64_t *renewed, struct err *e)
{
    if (lease_ms <= 0)
        return err_set(e, ERR_USAGE, "store: renew leases: lease_ms must be positive");
    return lease_write(st, S_RENEW, owner, now + lease_ms, renewed, e, "renew delivery leases");
}

static int sq_delivery_release(struct store *st, const char *owner, int64_t id, int64_t *released,
                           struct err *e)
{
    return lease_write(st, id ? S_RELEASE_ONE : S_RELEASE_ALL, owner, id, released, e,
                       "release delivery leases");
}

/* Status, message and lease of delivery id: 0, STORE_NOTFOUND or -1.
 * owner (STORE_OWNER_MAX + 1 bytes) and until may be NULL. */
static int delivery_status(struct store *st, int64_t id, enum store_dstatus *status,
                           int64_t *msg_id, char *owner, int64_t *until, struct err *e)
{
    sqlite3_stmt *s = S(st, S_DELIV_STATUS, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW) {
        *status = (enum store_dstatus)sqlite3_column_int(s, 0);
        *msg_id = sqlite3_column_int64(s, 1);
        if (owner)
            col_copy(s, 2, owner, STORE_OWNER_MAX + 1);
        if (until)
            *until = sqlite3_column_int64(s, 3);
    } else if (rc == SQLITE_DONE) {
        r = STORE_NOTFOUND;
    } else {
        r = dberr(st, e, "get delivery status");
    }
    done(s);
    return r;
}

static int attempt_insert(struct store *st, int64_t id, const struct store_attempt *a,
                          enum store_dstatus status, struct err *e)
{
    const char *op = "record delivery attempt";
    sqlite3_stmt *s = S(st, S_ATTEMPT_INS, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, a->started_at);
    sqlite3_bind_int64(s, 3, a->duration_ms);
    sqlite3_bind_int(s, 4, a->http_status);
    bind_trunc(s, 5, a->error ? a->error : "", STORE_ERROR_MAX);
    bind_str(s, 6, a->outcome ? a->outcome : store_dstatus_name(status));
    return run(st, s, e, op);
}

static int msg_maybe_delivered(struct store *st, int64_t msg_id, int64_t end, struct err *e,
                               const char *op);

static int record_tx(struct store *st, int64_t id, int64_t msg_id, const struct store_attempt *a,
                     enum store_dstatus status, int64_t next_attempt_at, struct err *e)
{
    const char *op = "record delivery attempt";
    int64_t end = a->started_at + (a->duration_ms > 0 ? a->duration_ms : 0);
    sqlite3_stmt *s = S(st, S_DELIV_UPDATE, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int(s, 2, status);
    sqlite3_bind_int64(s, 3, status == STORE_D_FAILED ? next_attempt_at : 0);
    sqlite3_bind_int64(s, 4, end);
    sqlite3_bind_int64(s, 5, status == STORE_D_DELIVERED ? end : 0);
    sqlite3_bind_int(s, 6, a->http_status);
    bind_trunc(s, 7, a->error ? a->error : "", STORE_ERROR_MAX);
    if (run(st, s, e, op) < 0 || attempt_insert(st, id, a, status, e) < 0)
        return -1;
    if (status != STORE_D_DELIVERED)
        return 0;
    return msg_maybe_delivered(st, msg_id, end, e, op);
}

/* When none of message msg_id's deliveries is left to do (each delivered
 * or dropped): the message delivered at `end`, its UIDL "delivered".  An
 * event's delivery (msg_id 0) has no message. */
static int msg_maybe_delivered(struct store *st, int64_t msg_id, int64_t end, struct err *e,
                               const char *op)
{
    sqlite3_stmt *s;
    if (msg_id <= 0)
        return 0;
    if (!(s = S(st, S_MSG_UNDELIVERED, e)))
        return -1;
    sqlite3_bind_int64(s, 1, msg_id);
    int rc = sqlite3_step(s);
    int64_t left = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    if (rc != SQLITE_ROW) {
        dberr(st, e, op);
        done(s);
        return -1;
    }
    done(s);
    if (left > 0)
        return 0;
    if (!(s = S(st, S_MSG_SET_DELIVERED, e)))
        return -1;
    sqlite3_bind_int64(s, 1, msg_id);
    sqlite3_bind_int64(s, 2, end);
    if (run(st, s, e, op) < 0 || !(s = S(st, S_UIDL_SET_DELIVERED, e)))
        return -1;
    sqlite3_bind_int64(s, 1, msg_id);
    return run(st, s, e, op);
}

static int sq_delivery_record(struct store *st, const char *owner, int64_t id,
                          const struct store_attempt *a, enum store_dstatus status,
                          int64_t next_attempt_at, struct err *e)
{
    if (store_check_record(owner, a, status, e) < 0)
        return -1;
    const char *op = "record delivery attempt";
    if (tx_begin(st, e, op) < 0)
        return -1;
    enum store_dstatus cur;
    int64_t msg_id = 0, until = 0;
    char holder[STORE_OWNER_MAX + 1] = "";
    int64_t end = a->started_at + (a->duration_ms > 0 ? a->duration_ms : 0);
    int r = delivery_status(st, id, &cur, &msg_id, holder, &until, e);
    bool lost = r == 0 && ((cur != STORE_D_PENDING && cur != STORE_D_FAILED) ||
                           (holder[0] && strcmp(holder, owner) != 0 && until > end));
    if (r == 0 && lost) {
        r = attempt_insert(st, id, a, status, e);
        if (r == 0)
            r = STORE_LEASE_LOST;
    } else if (r == 0) {
        r = record_tx(st, id, msg_id, a, status, next_attempt_at, e);
    }
    if (r >= 0 && r != STORE_NOTFOUND && tx_commit(st, e, op) < 0)
        r = -1;
    if (r < 0 || r == STORE_NOTFOUND)
        tx_rollback(st);
    return r;
}

static int sq_delivery_retry(struct store *st, int64_t id, int64_t now, struct err *e)
{
    const char *op = "retry delivery";
    if (tx_begin(st, e, op) < 0)
        return -1;
    enum store_dstatus cur;
    int64_t msg_id = 0;
    uint64_t len;
    int r = delivery_status(st, id, &cur, &msg_id, NULL, NULL, e);
    if (r == 0)
        r = store_check_settled("retry", "retried", id, cur, e);
    if (r == 0 && msg_id > 0) {
        int b = body_len(st, msg_id, &len, e);
        if (b == STORE_NOTFOUND)
            r = store_err_body_purged(id, e);
        else
            r = b;
    }
    if (r == 0) {
        sqlite3_stmt *s = S(st, S_RETRY, e);
        if (!s) {
            r = -1;
        } else {
            sqlite3_bind_int64(s, 1, id);
            sqlite3_bind_int64(s, 2, now);
            r = run(st, s, e, op);
        }
    }
    if (r == 0)
        r = tx_commit(st, e, op);
    if (r != 0)
        tx_rollback(st);
    return r;
}

static int sq_delivery_get(struct store *st, int64_t id, struct store_delivery *out,
                       store_attempt_cb cb, void *ctx, struct err *e)
{
    err_clear(e);
    sqlite3_stmt *s = S(st, S_DELIV_GET, e), *a = S(st, S_ATTEMPTS, e);
    if (!s || !a)
        return -1;
    /* one read transaction: the delivery and its attempts agree */
    if (!st->batch && exec(st, "BEGIN", e, "get delivery") < 0)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW)
        delivery_row(s, out);
    else if (rc == SQLITE_DONE)
        r = STORE_NOTFOUND;
    else
        r = dberr(st, e, "get delivery");
    done(s);
    if (r == 0 && cb) {
        sqlite3_bind_int64(a, 1, id);
        while ((rc = sqlite3_step(a)) == SQLITE_ROW) {
            const char *er = (const char *)sqlite3_column_text(a, 3);
            const char *oc = (const char *)sqlite3_column_text(a, 4);
            struct store_attempt_row row = {
                .started_at = sqlite3_column_int64(a, 0),
                .duration_ms = sqlite3_column_int64(a, 1),
                .http_status = sqlite3_column_int(a, 2),
                .error = er ? er : "",
                .outcome = oc ? oc : "",
            };
            if (cb(ctx, &row, e) != 0) {
                r = store_cb_stop(e);
                break;
            }
        }
        if (r == 0 && rc != SQLITE_DONE)
            r = dberr(st, e, "get delivery attempts");
        done(a);
    }
    if (!st->batch)
        exec(st, "COMMIT", NULL, "get delivery");
    return r;
}

static int sq_delivery_list(struct store *st, const enum store_dstatus *status,
                        const char *account, size_t limit, const char *cursor,
                        store_delivery_cb cb, void *ctx, char *next_cursor, struct err *e)
{
    int64_t before = INT64_MAX;
    if (store_check_list(status, account, limit, cursor, next_cursor, &before, e) < 0)
        return -1;
    enum sid id = status ? (account ? S_LIST_SA : S_LIST_S) : (account ? S_LIST_A : S_LIST_ALL);
    sqlite3_stmt *s = S(st, id, e);
    if (!s)
        return -1;
    if (status)
        sqlite3_bind_int(s, sqlite3_bind_parameter_index(s, ":status"), *status);
    if (account)
        bind_str(s, sqlite3_bind_parameter_index(s, ":account"), account);
    sqlite3_bind_int64(s, sqlite3_bind_parameter_index(s, ":before"), before);
    /* one row more than asked tells whether there is a next page */
    sqlite3_bind_int64(s, sqlite3_bind_parameter_index(s, ":limit"), (sqlite3_int64)limit + 1);
    struct store_delivery d;
    size_t k = 0;
    int rc, r = 0;
    int64_t last = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (k == limit) {
            char tmp[STORE_CURSOR_MAX];
            int n = snprintf(tmp, sizeof tmp, "c%" PRId64, last);
            if (n > 0 && (size_t)n < sizeof tmp)
                memcpy(next_cursor, tmp, (size_t)n + 1);
            rc = SQLITE_DONE;
            break;
        }
        memset(&d, 0, sizeof d);
        delivery_row(s, &d);
        last = d.id;
        k++;
        if (cb(ctx, &d, e) != 0) {
            r = store_cb_stop(e);
            next_cursor[0] = '\0';
            break;
        }
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = dberr(st, e, "list deliveries");
    done(s);
    return r;
}

static int sq_delivery_counts(struct store *st, struct store_queue_counts *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = S(st, S_COUNTS, e);
    if (!s)
        return -1;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t c = sqlite3_column_int64(s, 1);
        switch (sqlite3_column_int(s, 0)) {
        case STORE_D_PENDING: out->pending = c; break;
        case STORE_D_DELIVERED: out->delivered = c; break;
        case STORE_D_FAILED: out->failed = c; break;
        case STORE_D_DEAD: out->dead = c; break;
        case STORE_D_DROPPED: out->dropped = c; break;
        default: break;
        }
    }
    int r = rc == SQLITE_DONE ? 0 : dberr(st, e, "count deliveries");
    done(s);
    return r;
}

static int sq_delivery_next_due(struct store *st, int64_t now, int64_t *at, struct err *e)
{
    *at = 0;
    sqlite3_stmt *s = S(st, S_NEXT_DUE, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, now);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW)
        *at = sqlite3_column_int64(s, 0); /* NULL (none) reads as 0 */
    else
        r = dberr(st, e, "next due delivery");
    done(s);
    return r;
}

/* ---- webhooks ---------------------------------------------------------- */

static int sq_webhook_disable(struct store *st, const char *webhook, const char *reason,
                          int64_t now, struct err *e)
{
    if (store_check_name("webhook", webhook, e) < 0)
        return -1;
    const char *op = "disable webhook";
    sqlite3_stmt *s = S(st, S_WH_DISABLE, e);
    if (!s || tx_begin(st, e, op) < 0)
        return -1;
    bind_str(s, 1, webhook);
    bind_trunc(s, 2, reason ? reason : "", STORE_ERROR_MAX);
    sqlite3_bind_int64(s, 3, now);
    if (run(st, s, e, op) < 0 || tx_commit(st, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    return 0;
}

static int sq_webhooks_enable_all(struct store *st, struct err *e)
{
    return write1(st, S_WH_ENABLE_ALL, NULL, e, "enable webhooks");
}

static int sq_webhook_disabled(struct store *st, const char *webhook, bool *disabled,
                           int64_t *since, struct err *e)
{
    if (store_check_name("webhook", webhook, e) < 0)
        return -1;
    sqlite3_stmt *s = S(st, S_WH_GET, e);
    if (!s)
        return -1;
    bind_str(s, 1, webhook);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
        *disabled = rc == SQLITE_ROW;
        if (since)
            *since = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    } else {
        r = dberr(st, e, "get webhook state");
    }
    done(s);
    return r;
}

/* ---- link key ---------------------------------------------------------- */

static int link_key_read(struct store *st, unsigned char *key, int64_t *created_at, bool *found,
                         struct err *e)
{
    sqlite3_stmt *s = S(st, S_LINK_GET, e);
    if (!s)
        return -1;
    int rc = sqlite3_step(s), r = 0;
    *found = false;
    if (rc == SQLITE_ROW && sqlite3_column_bytes(s, 0) == STORE_LINK_KEY_LEN) {
        memcpy(key, sqlite3_column_blob(s, 0), STORE_LINK_KEY_LEN);
        if (created_at)
            *created_at = sqlite3_column_int64(s, 1);
        *found = true;
    } else if (rc == SQLITE_ROW) {
        r = err_set(e, ERR_INTERNAL, "store: the link key in %s is not %d bytes", st->path,
                    STORE_LINK_KEY_LEN);
    } else if (rc != SQLITE_DONE) {
        r = dberr(st, e, "get the link key");
    }
    done(s);
    return r;
}

/* Write a new random key: `which` is S_LINK_CREATE (only if none) or S_LINK_SET. */
static int link_key_write(struct store *st, int which, int64_t now, struct err *e)
{
    unsigned char key[STORE_LINK_KEY_LEN];
    const char *op = which == S_LINK_SET ? "rotate the link key" : "create the link key";
    if (RAND_bytes(key, sizeof key) != 1)
        return err_set(e, ERR_INTERNAL, "store: %s: no random bytes", op);
    sqlite3_stmt *s = S(st, which, e);
    if (!s || tx_begin(st, e, op) < 0) {
        OPENSSL_cleanse(key, sizeof key);
        return -1;
    }
    sqlite3_bind_blob(s, 1, key, sizeof key, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, now);
    OPENSSL_cleanse(key, sizeof key);
    if (run(st, s, e, op) < 0 || tx_commit(st, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    return 0;
}

static int sq_link_key(struct store *st, unsigned char key[STORE_LINK_KEY_LEN], int64_t *created_at,
                   int64_t now, struct err *e)
{
    bool found;
    if (!st || !key)
        return err_set(e, ERR_USAGE, "store: link key: no store or buffer");
    if (link_key_read(st, key, created_at, &found, e) < 0)
        return -1;
    if (found)
        return 0;
    /* first use: whoever inserts first wins, everyone reads that one */
    if (link_key_write(st, S_LINK_CREATE, now, e) < 0 ||
        link_key_read(st, key, created_at, &found, e) < 0)
        return -1;
    if (!found)
        return err_set(e, ERR_INTERNAL, "store: the link key vanished after it was made");
    return 0;
}

static int sq_link_key_rotate(struct store *st, int64_t now, struct err *e)
{
    if (!st)
        return err_set(e, ERR_USAGE, "store: link key: no store");
    return link_key_write(st, S_LINK_SET, now, e);
}

/* ---- accounts ---------------------------------------------------------- */

static int sq_account_get(struct store *st, const char *account, struct store_account_state *out,
                      struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    sqlite3_stmt *s = S(st, S_ACC_GET, e);
    if (!s)
        return -1;
    bind_str(s, 1, account);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof *out);
        col_copy(s, 0, out->state, sizeof out->state);
        col_copy(s, 1, out->last_error, sizeof out->last_error);
        out->last_attempt_at = sqlite3_column_int64(s, 2);
        out->last_success_at = sqlite3_column_int64(s, 3);
        out->backoff_until = sqlite3_column_int64(s, 4);
    } else if (rc == SQLITE_DONE) {
        r = STORE_NOTFOUND;
    } else {
        r = dberr(st, e, "get account state");
    }
    done(s);
    return r;
}

static int sq_account_set(struct store *st, const char *account,
                      const struct store_account_state *in, struct err *e)
{
    size_t sl = 0;
    if (store_check_account_state(account, in, &sl, e) < 0)
        return -1;
    const char *op = "set account state";
    sqlite3_stmt *s = S(st, S_ACC_SET, e);
    if (!s || tx_begin(st, e, op) < 0)
        return -1;
    bind_str(s, 1, account);
    sqlite3_bind_text(s, 2, in->state, (int)sl, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, in->last_error, (int)strnlen(in->last_error, STORE_ERROR_MAX),
                      SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, in->last_attempt_at);
    sqlite3_bind_int64(s, 5, in->last_success_at);
    sqlite3_bind_int64(s, 6, in->backoff_until);
    if (run(st, s, e, op) < 0 || tx_commit(st, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    return 0;
}

static int sq_account_lease(struct store *st, const char *account, const char *owner, int64_t now,
                        int64_t lease_ms, struct err *e)
{
    if (store_check_name("account", account, e) < 0 || store_check_owner(owner, e) < 0)
        return -1;
    if (lease_ms <= 0)
        return err_set(e, ERR_USAGE, "store: account lease: lease_ms must be positive");
    const char *op = "lease account";
    sqlite3_stmt *s = S(st, S_ACC_LEASE, e);
    if (!s || tx_begin(st, e, op) < 0)
        return -1;
    bind_str(s, 1, account);
    bind_str(s, 2, owner);
    sqlite3_bind_int64(s, 3, now + lease_ms);
    sqlite3_bind_int64(s, 4, now);
    if (run(st, s, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    int64_t c = sqlite3_changes64(st->db);
    if (tx_commit(st, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    return c ? 0 : STORE_LEASE_LOST;
}

static int sq_account_renew(struct store *st, const char *owner, int64_t now, int64_t lease_ms,
                        int64_t *renewed, struct err *e)
{
    if (lease_ms <= 0)
        return err_set(e, ERR_USAGE, "store: renew account leases: lease_ms must be positive");
    return lease_write(st, S_ACC_RENEW, owner, now + lease_ms, renewed, e,
                       "renew account leases");
}

static int sq_account_release(struct store *st, const char *owner, int64_t *released,
                          struct err *e)
{
    return lease_write(st, S_ACC_RELEASE_ALL, owner, 0, released, e, "release account leases");
}

static int count1(struct store *st, enum sid id, const char *account, int64_t *out,
                  struct err *e)
{
    sqlite3_stmt *s = S(st, id, e);
    if (!s)
        return -1;
    bind_str(s, 1, account);
    int r = 0;
    if (sqlite3_step(s) == SQLITE_ROW)
        *out = sqlite3_column_int64(s, 0);
    else
        r = dberr(st, e, "count for account");
    done(s);
    return r;
}

static int sq_account_counts(struct store *st, const char *account,
                         struct store_account_counts *out, struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    memset(out, 0, sizeof *out);
    if (count1(st, S_ACC_STORED, account, &out->stored, e) < 0 ||
        count1(st, S_ACC_PENDING, account, &out->pending_deliveries, e) < 0)
        return -1;
    return 0;
}

/* ---- statistics ---------------------------------------------------------- */

/* Attempts of webhook started in (from, to]: count and 2xx. */
static int wh_attempts(struct store *st, const char *webhook, int64_t from, int64_t to,
                       int64_t *all, int64_t *ok, struct err *e)
{
    sqlite3_stmt *s = S(st, S_WH_ATTEMPTS, e);
    if (!s)
        return -1;
    bind_str(s, 1, webhook);
    sqlite3_bind_int64(s, 2, from);
    sqlite3_bind_int64(s, 3, to);
    int r = 0;
    if (sqlite3_step(s) == SQLITE_ROW) {
        *all = sqlite3_column_int64(s, 0);
        *ok = sqlite3_column_int64(s, 1); /* NULL (no rows) reads as 0 */
    } else {
        r = dberr(st, e, "count a webhook's attempts");
    }
    done(s);
    return r;
}

/* The nearest-rank percentile pct (1..100) of n > 0 latencies in (from, to]. */
static int wh_latency(struct store *st, const char *webhook, int64_t from, int64_t to, int64_t n,
                      int pct, int64_t *out, struct err *e)
{
    int64_t rank = (n * pct + 99) / 100; /* ceil(n * pct / 100), 1..n */
    sqlite3_stmt *s = S(st, S_WH_LATENCY, e);
    if (!s)
        return -1;
    bind_str(s, 1, webhook);
    sqlite3_bind_int64(s, 2, from);
    sqlite3_bind_int64(s, 3, to);
    sqlite3_bind_int64(s, 4, rank < 1 ? 0 : rank - 1);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(s, 0);
    else if (rc == SQLITE_DONE)
        *out = -1; /* rows went away meanwhile (a purge) */
    else
        r = dberr(st, e, "read a webhook's latency");
    done(s);
    return r;
}

static int sq_webhook_stats(struct store *st, const char *webhook, int64_t now,
                        struct store_webhook_stats *out, struct err *e)
{
    if (store_webhook_stats_init(webhook, out, e) < 0)
        return -1;
    if (wh_attempts(st, webhook, now - STORE_HOUR_MS, now, &out->attempts_hour,
                    &out->delivered_hour, e) < 0 ||
        wh_attempts(st, webhook, now - STORE_DAY_MS, now, &out->attempts_day,
                    &out->delivered_day, e) < 0)
        return -1;
    if (out->attempts_day > 0 &&
        (wh_latency(st, webhook, now - STORE_DAY_MS, now, out->attempts_day, 50, &out->p50_ms,
                    e) < 0 ||
         wh_latency(st, webhook, now - STORE_DAY_MS, now, out->attempts_day, 99, &out->p99_ms,
                    e) < 0))
        return -1;
    sqlite3_stmt *s = S(st, S_WH_LAST_ERROR, e);
    if (!s)
        return -1;
    bind_str(s, 1, webhook);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW) {
        out->last_error_at = sqlite3_column_int64(s, 0);
        out->last_error_status = sqlite3_column_int(s, 1);
        col_copy(s, 2, out->last_error, sizeof out->last_error);
    } else if (rc != SQLITE_DONE) {
        r = dberr(st, e, "read a webhook's last error");
    }
    done(s);
    return r;
}

/* Add each row's counts (columns 1.., by hour in column 0) to the bucket of
 * its hour: field offsets into struct store_hour. */
static int hourly_add(struct store *st, enum sid id, int64_t first_hour, size_t hours,
                      struct store_hour *out, const size_t *fields, int nfields, struct err *e)
{
    sqlite3_stmt *s = S(st, id, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, first_hour * STORE_HOUR_MS);
    sqlite3_bind_int64(s, 2, (first_hour + (int64_t)hours) * STORE_HOUR_MS);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t h = sqlite3_column_int64(s, 0) - first_hour;
        if (h < 0 || h >= (int64_t)hours)
            continue;
        for (int f = 0; f < nfields; f++)
            *(int64_t *)((char *)&out[h] + fields[f]) = sqlite3_column_int64(s, f + 1);
    }
    int r = rc == SQLITE_DONE ? 0 : dberr(st, e, "count by hour");
    done(s);
    return r;
}

static int sq_stats_hourly(struct store *st, int64_t now, size_t hours, struct store_hour *out,
                       struct err *e)
{
    int64_t first = 0;
    if (store_hours_init(now, hours, out, &first, e) < 0)
        return -1;
    static const size_t msg_f[] = {offsetof(struct store_hour, received)};
    static const size_t att_f[] = {offsetof(struct store_hour, attempts),
                                   offsetof(struct store_hour, delivered)};
    if (hourly_add(st, S_HOURLY_MSGS, first, hours, out, msg_f, 1, e) < 0 ||
        hourly_add(st, S_HOURLY_ATTEMPTS, first, hours, out, att_f, 2, e) < 0)
        return -1;
    return 0;
}

/* ---- OAuth2 tokens ------------------------------------------------------ */

static void blob_copy(sqlite3_stmt *s, int i, unsigned char *dst, size_t size, size_t *len)
{
    const void *b = sqlite3_column_blob(s, i);
    size_t n = b ? (size_t)sqlite3_column_bytes(s, i) : 0;
    if (n > size)
        n = 0; /* cannot be stored (check_sealed): treat as none */
    if (n)
        memcpy(dst, b, n);
    *len = n;
}

static int bind_blob(sqlite3_stmt *s, int i, const unsigned char *p, size_t len)
{
    return p ? sqlite3_bind_blob(s, i, p, (int)len, SQLITE_STATIC) : sqlite3_bind_null(s, i);
}

/* Read the row (inside or outside a transaction): 0, STORE_NOTFOUND, -1. */
static int oauth2_read(struct store *st, const char *account, struct store_oauth2 *out,
                       struct err *e)
{
    sqlite3_stmt *s = S(st, S_OA_GET, e);
    if (!s)
        return -1;
    bind_str(s, 1, account);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW) {
        out->version = sqlite3_column_int64(s, 0);
        out->status = sqlite3_column_int(s, 1) == 1 ? STORE_OAUTH2_INVALID : STORE_OAUTH2_OK;
        col_copy(s, 2, out->flow, sizeof out->flow);
        col_copy(s, 3, out->error, sizeof out->error);
        blob_copy(s, 4, out->access, sizeof out->access, &out->access_len);
        blob_copy(s, 5, out->refresh, sizeof out->refresh, &out->refresh_len);
        out->access_issued_at = sqlite3_column_int64(s, 6);
        out->access_expires_at = sqlite3_column_int64(s, 7);
        out->authorized_at = sqlite3_column_int64(s, 8);
        out->refresh_used_at = sqlite3_column_int64(s, 9);
        out->retry_at = sqlite3_column_int64(s, 10);
        out->failures = sqlite3_column_int(s, 11);
        col_copy(s, 12, out->lease_owner, sizeof out->lease_owner);
        out->lease_until = sqlite3_column_int64(s, 13);
    } else if (rc == SQLITE_DONE) {
        r = STORE_NOTFOUND;
    } else {
        r = dberr(st, e, "get OAuth2 tokens");
    }
    done(s);
    return r;
}

static int sq_oauth2_get(struct store *st, const char *account, struct store_oauth2 *out,
                     struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    return oauth2_read(st, account, out, e);
}

static int sq_oauth2_grant(struct store *st, const char *account, const char *flow,
                       const struct store_oauth2_tokens *t, int64_t now, struct err *e)
{
    if (store_check_tokens("an OAuth2 grant", account, flow, t, e) < 0)
        return -1;
    const char *op = "store OAuth2 grant";
    sqlite3_stmt *s = S(st, S_OA_GRANT, e);
    if (!s || tx_begin(st, e, op) < 0)
        return -1;
    bind_str(s, 1, account);
    bind_str(s, 2, flow);
    bind_blob(s, 3, t->access, t->access_len);
    bind_blob(s, 4, t->refresh, t->refresh_len);
    sqlite3_bind_int64(s, 5, t->issued_at);
    sqlite3_bind_int64(s, 6, t->expires_at);
    sqlite3_bind_int64(s, 7, now);
    if (run(st, s, e, op) < 0 || tx_commit(st, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    return 0;
}

static int sq_oauth2_lease(struct store *st, const char *account, const char *owner, int64_t now,
                       int64_t lease_ms, bool create, const char *flow,
                       struct store_oauth2 *out, struct err *e)
{
    if (store_check_oauth2_lease(account, owner, lease_ms, create, flow, e) < 0)
        return -1;
    const char *op = "lease OAuth2 tokens";
    sqlite3_stmt *ins = create ? S(st, S_OA_CREATE, e) : NULL, *lease = S(st, S_OA_LEASE, e);
    if ((create && !ins) || !lease || tx_begin(st, e, op) < 0)
        return -1;
    int r = oauth2_read(st, account, out, e);
    if (r == STORE_NOTFOUND && create) {
        bind_str(ins, 1, account);
        bind_str(ins, 2, flow);
        if (run(st, ins, e, op) < 0)
            goto fail;
        r = oauth2_read(st, account, out, e);
    }
    if (r < 0 || r == STORE_NOTFOUND) {
        if (r < 0)
            goto fail;
        tx_rollback(st);
        return STORE_NOTFOUND;
    }
    if (out->status == STORE_OAUTH2_INVALID) {
        tx_rollback(st);
        return 0;
    }
    if (out->lease_until > now && strcmp(out->lease_owner, owner) != 0) {
        tx_rollback(st);
        return STORE_OAUTH2_BUSY;
    }
    bind_str(lease, 1, account);
    bind_str(lease, 2, owner);
    sqlite3_bind_int64(lease, 3, now + lease_ms);
    if (run(st, lease, e, op) < 0 || tx_commit(st, e, op) < 0)
        goto fail;
    snprintf(out->lease_owner, sizeof out->lease_owner, "%s", owner);
    out->lease_until = now + lease_ms;
    return 0;
fail:
    tx_rollback(st);
    return -1;
}

/* Run a compare-and-set UPDATE of one row: 0, STORE_LEASE_LOST (version
 * changed), STORE_NOTFOUND (no row), -1. */
static int oauth2_cas(struct store *st, sqlite3_stmt *s, const char *account, struct err *e,
                      const char *op)
{
    if (tx_begin(st, e, op) < 0) {
        done(s);
        return -1;
    }
    if (run(st, s, e, op) < 0)
        goto fail;
    int64_t changed = sqlite3_changes64(st->db);
    int r = 0;
    if (changed == 0) {
        struct store_oauth2 *row = malloc(sizeof *row);
        if (!row) {
            err_set(e, ERR_INTERNAL, "store: out of memory");
            goto fail;
        }
        r = oauth2_read(st, account, row, e);
        OPENSSL_cleanse(row, sizeof *row);
        free(row);
        if (r < 0)
            goto fail;
        r = r == STORE_NOTFOUND ? STORE_NOTFOUND : STORE_LEASE_LOST;
    }
    if (tx_commit(st, e, op) < 0)
        goto fail;
    return r;
fail:
    tx_rollback(st);
    return -1;
}

static int sq_oauth2_refreshed(struct store *st, const char *account, int64_t version,
                           const struct store_oauth2_tokens *t, int64_t now, struct err *e)
{
    if (store_check_tokens("a refresh", account, NULL, t, e) < 0)
        return -1;
    sqlite3_stmt *s = S(st, S_OA_REFRESHED, e);
    if (!s)
        return -1;
    bind_str(s, 1, account);
    sqlite3_bind_int64(s, 2, version);
    bind_blob(s, 3, t->access, t->access_len);
    bind_blob(s, 4, t->refresh, t->refresh_len);
    sqlite3_bind_int64(s, 5, t->issued_at);
    sqlite3_bind_int64(s, 6, t->expires_at);
    sqlite3_bind_int64(s, 7, now);
    return oauth2_cas(st, s, account, e, "save refreshed OAuth2 tokens");
}

static int sq_oauth2_failed(struct store *st, const char *account, int64_t version, bool invalid,
                        const char *error, int64_t retry_at, struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    sqlite3_stmt *s = S(st, S_OA_FAILED, e);
    if (!s)
        return -1;
    bind_str(s, 1, account);
    sqlite3_bind_int64(s, 2, version);
    sqlite3_bind_int(s, 3, invalid ? 1 : 0);
    bind_trunc(s, 4, error ? error : "", STORE_ERROR_MAX);
    sqlite3_bind_int64(s, 5, retry_at);
    return oauth2_cas(st, s, account, e, "record failed OAuth2 refresh");
}

static int sq_oauth2_release(struct store *st, const char *account, const char *owner,
                         struct err *e)
{
    if (store_check_name("account", account, e) < 0 || store_check_owner(owner, e) < 0)
        return -1;
    const char *op = "release OAuth2 lease";
    sqlite3_stmt *s = S(st, S_OA_RELEASE, e);
    if (!s || tx_begin(st, e, op) < 0)
        return -1;
    bind_str(s, 1, account);
    bind_str(s, 2, owner);
    if (run(st, s, e, op) < 0 || tx_commit(st, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    return 0;
}

/* ---- retention --------------------------------------------------------- */

/* A purge in one transaction: sel puts the ids of at most max rows older
 * than now - retention_ms into temp.purge (?1 the limit of age, ?2 max),
 * then each of steps runs (with now as ?1 where it takes a parameter).
 * *purged (may be NULL) gets the number of ids. */
static int purge_run(struct store *st, enum sid sel_id, const enum sid *steps, size_t n_steps,
                     int64_t retention_ms, int64_t now, size_t max, int64_t *purged,
                     struct err *e, const char *op)
{
    if (retention_ms < 0)
        return err_set(e, ERR_USAGE, "store: purge: negative retention");
    sqlite3_stmt *sel = S(st, sel_id, e);
    if (!sel || tx_begin(st, e, op) < 0)
        return -1;
    sqlite3_bind_int64(sel, 1, now - retention_ms);
    sqlite3_bind_int64(sel, 2, max == 0 || max > INT64_MAX ? -1 : (sqlite3_int64)max);
    int64_t count = 0;
    if (run_id(st, S_PURGE_CLEAR, e, op) < 0 || run(st, sel, e, op) < 0)
        goto fail;
    count = sqlite3_changes64(st->db);
    for (size_t i = 0; i < n_steps; i++) {
        sqlite3_stmt *s = S(st, steps[i], e);
        if (!s)
            goto fail;
        if (sqlite3_bind_parameter_count(s) > 0)
            sqlite3_bind_int64(s, 1, now);
        if (run(st, s, e, op) < 0)
            goto fail;
    }
    if (run_id(st, S_PURGE_CLEAR, e, op) < 0 || tx_commit(st, e, op) < 0)
        goto fail;
    if (purged)
        *purged = count;
    return 0;
fail:
    tx_rollback(st);
    return -1;
}

static int sq_purge_bodies(struct store *st, int64_t retention_ms, int64_t now, size_t max,
                           int64_t *purged, struct err *e)
{
    static const enum sid steps[] = {S_PURGE_BODIES, S_PURGE_MARK};
    return purge_run(st, S_PURGE_SEL, steps, sizeof steps / sizeof steps[0], retention_ms, now,
                     max, purged, e, "purge bodies");
}

static int sq_purge_events(struct store *st, int64_t retention_ms, int64_t now, size_t max,
                           int64_t *purged, struct err *e)
{
    static const enum sid steps[] = {S_EVPURGE_ATTEMPTS, S_EVPURGE_DELIVERIES, S_EVPURGE_EVENTS};
    return purge_run(st, S_EVPURGE_SEL, steps, sizeof steps / sizeof steps[0], retention_ms, now,
                     max, purged, e, "purge events");
}

/* ---- backup, restore and export ------------------------------------------ */

#define BACKUP_RETRY_MS 100 /* wait step while the source is busy */

static int db_path(const char *state_dir, char *out, size_t size, struct err *e)
{
    if (!state_dir || !*state_dir)
        return err_set(e, ERR_USAGE, "store: state_dir is empty");
    int n = snprintf(out, size, "%s/%s", state_dir, STORE_DB_FILE);
    if (n < 0 || (size_t)n >= size)
        return err_set(e, ERR_LIMIT, "store: state_dir is longer than %d bytes",
                       (int)(size - sizeof STORE_DB_FILE - 1));
    return 0;
}

/* fsync the directory holding path, so a rename into it is durable. */
static int sync_parent(const char *path, struct err *e)
{
    char dir[PATH_BYTES];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        int er = errno;
        if (fd >= 0)
            close(fd);
        return err_set(e, ERR_INTERNAL, "store: cannot fsync directory %s: %s", dir, strerror(er));
    }
    close(fd);
    return 0;
}

static int fsync_path(const char *path, struct err *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        int er = errno;
        if (fd >= 0)
            close(fd);
        return err_set(e, ERR_INTERNAL, "store: cannot fsync %s: %s", path, strerror(er));
    }
    close(fd);
    return 0;
}

/* Copy all of src's "main" into dst's, waiting while src is busy. */
static int backup_copy(sqlite3 *dst, sqlite3 *src, const char *what, struct err *e)
{
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    if (!b)
        return err_set(e, ERR_INTERNAL, "store: %s: %s", what, sqlite3_errmsg(dst));
    int rc;
    /* -1: every page in one step, so the copy is one snapshot of the source */
    for (int waited = 0;; waited += BACKUP_RETRY_MS) {
        rc = sqlite3_backup_step(b, -1);
        if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || waited >= STORE_BUSY_TIMEOUT_MS)
            break;
        sqlite3_sleep(BACKUP_RETRY_MS);
    }
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE)
        return err_set(e, ERR_INTERNAL, "store: %s: %s", what,
                       sqlite3_errcode(dst) != SQLITE_OK ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
    return 0;
}

static int exec_db(sqlite3 *db, const char *sql, const char *what, struct err *e)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: %s: %s", what, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int store_backup(const char *state_dir, const char *out_path, uint64_t *bytes, struct err *e)
{
    char src_path[PATH_BYTES], tmp[PATH_BYTES];
    sqlite3 *src = NULL, *dst = NULL;
    bool made = false;
    int r = -1;
    if (db_path(state_dir, src_path, sizeof src_path, e) < 0)
        return -1;
    if (!out_path || !*out_path)
        return err_set(e, ERR_USAGE, "store: backup: no output file given");
    int n = snprintf(tmp, sizeof tmp, "%s.tmp-%d", out_path, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp)
        return err_set(e, ERR_LIMIT, "store: backup: the output path is longer than %d bytes",
                       PATH_BYTES - 16);
    struct stat sb;
    if (stat(src_path, &sb) < 0)
        return err_set(e, errno == ENOENT ? ERR_USAGE : ERR_INTERNAL,
                       "store: backup: no state database at %s: %s", src_path, strerror(errno));
    /* the source is opened as the bridge opens it (WAL needs the -shm file);
     * without SQLITE_OPEN_CREATE nothing new is made */
    if (sqlite3_open_v2(src_path, &src, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: backup: cannot open %s: %s", src_path,
                src ? sqlite3_errmsg(src) : "out of memory");
        goto out;
    }
    conn_setup(src);
    /* the copy is created here, so its mode is 0600 whatever the umask;
     * SQLite's journal for it takes the same mode */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        err_set(e, ERR_INTERNAL, "store: backup: cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    close(fd);
    made = true;
    if (sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: backup: cannot open %s: %s", tmp,
                dst ? sqlite3_errmsg(dst) : "out of memory");
        goto out;
    }
    conn_setup(dst);
    if (backup_copy(dst, src, "backup", e) < 0)
        goto out;
    /* the copied header says WAL; one file without -wal/-shm is what a backup is */
    if (exec_db(dst, "PRAGMA journal_mode = DELETE", "backup", e) < 0)
        goto out;
    if (sqlite3_close(dst) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: backup: cannot close %s: %s", tmp, sqlite3_errmsg(dst));
        goto out;
    }
    dst = NULL;
    if (fsync_path(tmp, e) < 0)
        goto out;
    if (stat(tmp, &sb) < 0 || rename(tmp, out_path) < 0) {
        err_set(e, ERR_INTERNAL, "store: backup: cannot rename %s to %s: %s", tmp, out_path,
                strerror(errno));
        goto out;
    }
    made = false;
    if (sync_parent(out_path, e) < 0)
        goto out;
    if (bytes)
        *bytes = (uint64_t)sb.st_size;
    r = 0;
out:
    sqlite3_close(dst);
    sqlite3_close(src);
    if (made)
        unlink(tmp);
    return r;
}

/* Is in_path a pop3bridge state this build can take?  Its schema version. */
static int check_copy(const char *in_path, int *version, struct err *e)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int r = -1;
    if (access(in_path, R_OK) < 0)
        return err_set(e, ERR_USAGE, "store: restore: cannot read %s: %s", in_path,
                       strerror(errno));
    if (sqlite3_open_v2(in_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        err_set(e, ERR_USAGE, "store: restore: cannot open %s: %s", in_path,
                db ? sqlite3_errmsg(db) : "out of memory");
        goto out;
    }
    conn_setup(db);
    const char *sql = "SELECT (SELECT user_version FROM pragma_user_version),"
                      " (SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
                      "  AND name IN ('messages', 'bodies', 'uidls', 'deliveries'))";
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK || sqlite3_step(s) != SQLITE_ROW) {
        err_set(e, ERR_USAGE, "store: restore: %s is not a pop3bridge state: %s", in_path,
                sqlite3_errmsg(db));
        goto out;
    }
    *version = sqlite3_column_int(s, 0);
    if (sqlite3_column_int(s, 1) != 4 || *version < 1) {
        err_set(e, ERR_USAGE, "store: restore: %s is not a pop3bridge state"
                              " (no pop3bridge tables, or no schema version)", in_path);
        goto out;
    }
    if (*version > STORE_SCHEMA_VERSION) {
        err_set(e, ERR_USAGE, "store: restore: %s has schema version %d, newer than this build"
                              " supports (%d)", in_path, *version, STORE_SCHEMA_VERSION);
        goto out;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW) {
        err_set(e, ERR_USAGE, "store: restore: %s: quick_check failed: %s", in_path,
                sqlite3_errmsg(db));
        goto out;
    }
    const char *ok = (const char *)sqlite3_column_text(s, 0);
    if (!ok || strcmp(ok, "ok") != 0) {
        err_set(e, ERR_USAGE, "store: restore: %s is damaged (quick_check: %.120s)", in_path,
                ok ? ok : "");
        goto out;
    }
    r = 0;
out:
    sqlite3_finalize(s);
    sqlite3_close(db);
    return r;
}

int store_restore(const char *state_dir, const char *in_path, int *schema_from, struct err *e)
{
    char path[PATH_BYTES], lock[PATH_BYTES];
    sqlite3 *src = NULL, *dst = NULL;
    int lock_fd = -1, r = -1, version = 0;
    if (db_path(state_dir, path, sizeof path, e) < 0)
        return -1;
    if (!in_path || !*in_path)
        return err_set(e, ERR_USAGE, "store: restore: no backup file given");
    int n = snprintf(lock, sizeof lock, "%s/%s", state_dir, STORE_LOCK_FILE);
    if (n < 0 || (size_t)n >= sizeof lock)
        return err_set(e, ERR_LIMIT, "store: state_dir is longer than %d bytes", PATH_BYTES - 32);
    if (check_copy(in_path, &version, e) < 0 || make_dirs(state_dir, e) < 0)
        return -1;

    /* a bridge running on state_dir holds the lock file ... */
    lock_fd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (lock_fd < 0)
        return err_set(e, ERR_INTERNAL, "store: restore: cannot open %s: %s", lock,
                       strerror(errno));
    if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
        r = errno == EWOULDBLOCK ? STORE_IN_USE : -1;
        err_set(e, r == STORE_IN_USE ? ERR_USAGE : ERR_INTERNAL,
                "store: restore: a bridge is running: it holds " STORE_LOCK_FILE
                " in %s; stop it first", state_dir);
        goto out;
    }
    /* ... and any process using the database holds a lock on it: in exclusive
     * locking mode, a transaction that gets the lock keeps it until close, so
     * nothing else opens the database while it is replaced */
    if (sqlite3_open_v2(path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                        SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: restore: cannot open %s: %s", path,
                dst ? sqlite3_errmsg(dst) : "out of memory");
        goto out;
    }
    sqlite3_extended_result_codes(dst, 1);
    if (exec_db(dst, "PRAGMA locking_mode = EXCLUSIVE", "restore", e) < 0)
        goto out;
    char *msg = NULL;
    int rc = sqlite3_exec(dst, "BEGIN EXCLUSIVE; COMMIT", NULL, NULL, &msg);
    sqlite3_free(msg);
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
        r = STORE_IN_USE;
        err_set(e, ERR_USAGE, "store: restore: the database is open in another process (a"
                              " bridge or a command working on it); stop it first: %s", path);
        goto out;
    }
    if (rc != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: restore: cannot lock %s: %s", path, sqlite3_errmsg(dst));
        goto out;
    }
    if (sqlite3_open_v2(in_path, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        err_set(e, ERR_USAGE, "store: restore: cannot open %s: %s", in_path,
                src ? sqlite3_errmsg(src) : "out of memory");
        goto out;
    }
    conn_setup(src);
    if (backup_copy(dst, src, "restore", e) < 0)
        goto out;
    sqlite3_close(src);
    src = NULL;
    if (sqlite3_close(dst) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: restore: cannot close %s: %s", path, sqlite3_errmsg(dst));
        goto out;
    }
    dst = NULL;
    /* WAL on, schema migrated, as a bridge would find it */
    struct store *st = store_sqlite_open(state_dir, e);
    if (!st)
        goto out;
    sq_close(st);
    /* root restoring a service's state: the files stay the service user's */
    struct stat dir_st;
    if (geteuid() == 0 && stat(state_dir, &dir_st) == 0 && dir_st.st_uid != 0) {
        static const char *const suffixes[] = {"", "-wal", "-shm"};
        for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
            char f[PATH_BYTES + 8];
            snprintf(f, sizeof f, "%s%s", path, suffixes[i]);
            if (chown(f, dir_st.st_uid, dir_st.st_gid) < 0 && errno != ENOENT) {
                err_set(e, ERR_INTERNAL, "store: restore: cannot chown %s: %s", f,
                        strerror(errno));
                goto out;
            }
        }
        if (fchown(lock_fd, dir_st.st_uid, dir_st.st_gid) < 0) {
            err_set(e, ERR_INTERNAL, "store: restore: cannot chown %s: %s", lock, strerror(errno));
            goto out;
        }
    }
    if (schema_from)
        *schema_from = version;
    r = 0;
out:
    sqlite3_close(src);
    sqlite3_close(dst);
    if (lock_fd >= 0)
        close(lock_fd);
    return r;
}

static int sq_msgs_each(struct store *st, const char *account, store_msg_cb cb, void *ctx,
                    struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT id FROM messages WHERE account = ?1 AND id > ?2"
                           " ORDER BY id LIMIT ?3",
                           -1, &s, NULL) != SQLITE_OK)
        return dberr(st, e, "list messages");
    int64_t ids[STORE_EXPORT_PAGE], after = 0;
    int r = 0;
    for (;;) {
        size_t n = 0;
        sqlite3_reset(s);
        bind_str(s, 1, account);
        sqlite3_bind_int64(s, 2, after);
        sqlite3_bind_int(s, 3, STORE_EXPORT_PAGE);
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
            ids[n++] = sqlite3_column_int64(s, 0);
        sqlite3_reset(s); /* no read transaction while cb works */
        if (rc != SQLITE_DONE) {
            r = dberr(st, e, "list messages");
            break;
        }
        for (size_t i = 0; i < n && r == 0; i++) {
            struct store_msg_info m;
            int g = sq_msg_get(st, ids[i], &m, e);
            if (g < 0)
                r = -1;
            else if (g == 0 && cb(ctx, &m, e) < 0)
                r = store_cb_stop(e);
        }
        if (r < 0 || n < STORE_EXPORT_PAGE)
            break;
        after = ids[n - 1];
    }
    sqlite3_finalize(s);
    return r;
}

/* ---- account leases and instances ----------------------------------------------- */

/* Prepare sql (uncached: these run once per poll or heartbeat). */
static sqlite3_stmt *prep(struct store *st, const char *sql, struct err *e, const char *op)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) {
        dberr(st, e, op);
        sqlite3_finalize(s);
        return NULL;
    }
    return s;
}

/* Step a prepared one-off write inside its own transaction; finalize it. */
static int write_once(struct store *st, sqlite3_stmt *s, int64_t *changes, struct err *e,
                      const char *op)
{
    if (tx_begin(st, e, op) < 0) {
        sqlite3_finalize(s);
        return -1;
    }
    int rc = sqlite3_step(s);
    int64_t c = sqlite3_changes64(st->db);
    int r = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : dberr(st, e, op);
    sqlite3_finalize(s);
    if (r == 0)
        r = tx_commit(st, e, op);
    if (r < 0) {
        tx_rollback(st);
        return -1;
    }
    if (changes)
        *changes = c;
    return 0;
}

static int sq_account_leases_each(struct store *st, int64_t now, store_lease_cb cb, void *ctx,
                                  struct err *e)
{
    err_clear(e);
    const char *op = "list account leases";
    sqlite3_stmt *s = prep(st, "SELECT name, lease_owner, lease_until FROM accounts"
                               " WHERE lease_owner IS NOT NULL AND lease_until > ?1 ORDER BY name",
                           e, op);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, now);
    int rc, r = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *a = (const char *)sqlite3_column_text(s, 0);
        const char *o = (const char *)sqlite3_column_text(s, 1);
        if (cb(ctx, a ? a : "", o ? o : "", sqlite3_column_int64(s, 2), e) != 0) {
            r = store_cb_stop(e);
            break;
        }
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = dberr(st, e, op);
    sqlite3_finalize(s);
    return r;
}

static int sq_instance_beat(struct store *st, const struct store_instance *in, struct err *e)
{
    if (store_check_instance(in, e) < 0)
        return -1;
    const char *op = "instance heartbeat";
    sqlite3_stmt *s = prep(st,
                           "INSERT INTO instances(id, host, public_url, started_at, heartbeat_at)"
                           " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(id) DO UPDATE SET"
                           " host = excluded.host, public_url = excluded.public_url,"
                           " started_at = excluded.started_at,"
                           " heartbeat_at = excluded.heartbeat_at",
                           e, op);
    if (!s)
        return -1;
    bind_str(s, 1, in->id);
    bind_str(s, 2, in->host);
    bind_str(s, 3, in->public_url);
    sqlite3_bind_int64(s, 4, in->started_at);
    sqlite3_bind_int64(s, 5, in->heartbeat_at);
    return write_once(st, s, NULL, e, op);
}

static int sq_instance_remove(struct store *st, const char *id, struct err *e)
{
    if (store_check_owner(id, e) < 0)
        return -1;
    const char *op = "remove instance";
    sqlite3_stmt *s = prep(st, "DELETE FROM instances WHERE id = ?1", e, op);
    if (!s)
        return -1;
    bind_str(s, 1, id);
    return write_once(st, s, NULL, e, op);
}

static void instance_row(sqlite3_stmt *s, struct store_instance *i)
{
    memset(i, 0, sizeof *i);
    col_copy(s, 0, i->id, sizeof i->id);
    col_copy(s, 1, i->host, sizeof i->host);
    col_copy(s, 2, i->public_url, sizeof i->public_url);
    i->started_at = sqlite3_column_int64(s, 3);
    i->heartbeat_at = sqlite3_column_int64(s, 4);
}

#define INSTANCE_COLS "SELECT id, host, public_url, started_at, heartbeat_at FROM instances "

static int sq_instances_each(struct store *st, int64_t live_since, int64_t forget_before,
                             store_instance_cb cb, void *ctx, struct err *e)
{
    err_clear(e);
    const char *op = "list instances";
    if (forget_before > 0) {
        sqlite3_stmt *d = prep(st, "DELETE FROM instances WHERE heartbeat_at < ?1", e, op);
        if (!d)
            return -1;
        sqlite3_bind_int64(d, 1, forget_before);
        if (write_once(st, d, NULL, e, op) < 0)
            return -1;
    }
    sqlite3_stmt *s = prep(st, INSTANCE_COLS "WHERE heartbeat_at >= ?1 ORDER BY started_at, id",
                           e, op);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, live_since);
    int rc, r = 0;
    struct store_instance i;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        instance_row(s, &i);
        if (cb(ctx, &i, e) != 0) {
            r = store_cb_stop(e);
            break;
        }
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = dberr(st, e, op);
    sqlite3_finalize(s);
    return r;
}

static int sq_instance_get(struct store *st, const char *id, struct store_instance *out,
                           struct err *e)
{
    if (store_check_owner(id, e) < 0)
        return -1;
    sqlite3_stmt *s = prep(st, INSTANCE_COLS "WHERE id = ?1", e, "get instance");
    if (!s)
        return -1;
    bind_str(s, 1, id);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW)
        instance_row(s, out);
    else if (rc == SQLITE_DONE)
        r = STORE_NOTFOUND;
    else
        r = dberr(st, e, "get instance");
    sqlite3_finalize(s);
    return r;
}

/* ---- events that are not messages (schema 7) --------------------------------------- */

static int event_insert(struct store *st, const char *account, const char *type,
                        const char *data, const char *const *webhooks, size_t n, int64_t now,
                        int64_t *id_out, struct err *e)
{
    const char *op = "add event";
    char key[STORE_KEY_HEX + 1];
    sqlite3_stmt *s = S(st, S_EVENT_INS, e);
    if (!s || store_new_event_key(key, e) < 0)
        return -1;
    bind_str(s, 1, account);
    bind_str(s, 2, type);
    bind_str(s, 3, data);
    sqlite3_bind_int64(s, 4, now);
    bind_str(s, 5, key);
    if (run(st, s, e, op) < 0)
        return -1;
    int64_t id = sqlite3_last_insert_rowid(st->db);
    if (!(s = S(st, S_EVENT_DELIV_INS, e)))
        return -1;
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(s, 1, id);
        bind_str(s, 2, account);
        bind_str(s, 3, webhooks[i]);
        sqlite3_bind_int64(s, 4, now);
        if (run(st, s, e, op) < 0)
            return -1;
    }
    *id_out = id;
    return 0;
}

static int sq_event_add(struct store *st, const char *account, const char *type, const char *data,
                        const char *const *webhooks, size_t n_webhooks, int64_t now,
                        int64_t *id, struct err *e)
{
    int64_t got = 0;
    if (store_check_event(account, type, data, webhooks, n_webhooks, e) < 0 ||
        tx_begin(st, e, "add event") < 0)
        return -1;
    if (event_insert(st, account, type, data, webhooks, n_webhooks, now, &got, e) < 0 ||
        tx_commit(st, e, "add event") < 0) {
        tx_rollback(st);
        return -1;
    }
    if (id)
        *id = got;
    return 0;
}

static int sq_account_event_once(struct store *st, const char *account, const char *type,
                                 const char *data, const char *const *webhooks, size_t n_webhooks,
                                 int64_t now, int64_t *event_id, struct err *e)
{
    const char *op = "add account event";
    if (event_id)
        *event_id = 0;
    if (store_check_event(account, type, data, webhooks, n_webhooks, e) < 0)
        return -1;
    if (tx_begin(st, e, op) < 0)
        return -1;
    /* read under the write lock: of several instances, one writes it */
    struct store_account_state cur;
    int g = sq_account_get(st, account, &cur, e);
    int r = g < 0 ? -1 : 0;
    int64_t since = g == 0 ? cur.last_success_at : 0, last = -1, got = 0;
    sqlite3_stmt *s = r == 0 ? S(st, S_EVENT_LAST, e) : NULL;
    if (r == 0 && !s)
        r = -1;
    if (s) {
        bind_str(s, 1, account);
        bind_str(s, 2, type);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
            last = sqlite3_column_int64(s, 0);
        else if (rc != SQLITE_ROW)
            r = dberr(st, e, op);
        done(s);
    }
    if (r == 0 && last < since) /* none yet (-1), or none since the last success */
        r = event_insert(st, account, type, data, webhooks, n_webhooks, now, &got, e);
    if (r == 0 && tx_commit(st, e, op) < 0)
        r = -1;
    if (r < 0) {
        tx_rollback(st);
        return -1;
    }
    if (event_id)
        *event_id = got;
    return 0;
}

static int sq_event_get(struct store *st, int64_t id, struct store_event *out, char **data,
                        struct err *e)
{
    if (data)
        *data = NULL;
    sqlite3_stmt *s = S(st, S_EVENT_GET, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof *out);
        out->id = id;
        col_copy(s, 0, out->account, sizeof out->account);
        col_copy(s, 1, out->type, sizeof out->type);
        out->created_at = sqlite3_column_int64(s, 3);
        col_copy(s, 4, out->key, sizeof out->key);
        if (data) {
            const char *t = (const char *)sqlite3_column_text(s, 2);
            if (!(*data = strdup(t ? t : "{}")))
                r = err_set(e, ERR_INTERNAL, "store: out of memory reading event data");
        }
    } else if (rc == SQLITE_DONE) {
        r = STORE_NOTFOUND;
    } else {
        r = dberr(st, e, "get event");
    }
    done(s);
    return r;
}

/* ---- operators: drop, retry in bulk ------------------------------------------------ */

static int sq_delivery_drop(struct store *st, int64_t id, int64_t now, struct err *e)
{
    const char *op = "drop delivery";
    if (tx_begin(st, e, op) < 0)
        return -1;
    enum store_dstatus cur;
    int64_t msg_id = 0;
    int r = delivery_status(st, id, &cur, &msg_id, NULL, NULL, e);
    if (r == 0)
        r = store_check_settled("drop", "dropped", id, cur, e);
    if (r == 0) {
        sqlite3_stmt *s = S(st, S_DROP, e);
        if (!s) {
            r = -1;
        } else {
            sqlite3_bind_int64(s, 1, id);
            sqlite3_bind_int64(s, 2, now);
            r = run(st, s, e, op);
        }
    }
    if (r == 0)
        r = msg_maybe_delivered(st, msg_id, now, e, op);
    if (r == 0)
        r = tx_commit(st, e, op);
    if (r != 0)
        tx_rollback(st);
    return r;
}

static int sq_delivery_retry_bulk(struct store *st, const char *webhook, enum store_dstatus status,
                                  size_t max, int64_t now, int64_t *retried, struct err *e)
{
    const char *op = "retry deliveries";
    if (retried)
        *retried = 0;
    if (store_check_retry_bulk(webhook, status, max, e) < 0)
        return -1;
    sqlite3_stmt *s = S(st, S_RETRY_BULK, e);
    if (!s || tx_begin(st, e, op) < 0)
        return -1;
    sqlite3_bind_int64(s, 1, now);
    sqlite3_bind_int(s, 2, status);
    if (webhook)
        bind_str(s, 3, webhook);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)max);
    if (run(st, s, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    int64_t n = sqlite3_changes64(st->db);
    if (tx_commit(st, e, op) < 0) {
        tx_rollback(st);
        return -1;
    }
    if (retried)
        *retried = n;
    return 0;
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

-- A state as schema version 2 left it (the same as tests/unit/test_store.c's
-- v2_schema, with the real SHA-256 of the body): one message of account "acc", UIDL "u1", body "ABC".
CREATE TABLE accounts(name TEXT PRIMARY KEY, state TEXT NOT NULL, last_error TEXT NOT NULL DEFAULT '', last_attempt_at INTEGER NOT NULL DEFAULT 0, last_success_at INTEGER NOT NULL DEFAULT 0, backoff_until INTEGER NOT NULL DEFAULT 0);
CREATE TABLE messages(id INTEGER PRIMARY KEY, account TEXT NOT NULL, uidl TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, received_at INTEGER NOT NULL, subject TEXT, from_addr TEXT, message_id_hdr TEXT, date_hdr TEXT, delivered_at INTEGER, body_purged_at INTEGER, kind TEXT NOT NULL DEFAULT 'message', declared_size INTEGER NOT NULL DEFAULT 0);
CREATE INDEX messages_account ON messages(account, body_purged_at);
CREATE INDEX messages_purgeable ON messages(delivered_at) WHERE body_purged_at IS NULL;
CREATE TABLE bodies(message_id INTEGER PRIMARY KEY REFERENCES messages(id), raw BLOB NOT NULL);
CREATE TABLE uidls(account TEXT NOT NULL, uidl TEXT NOT NULL, state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 3), message_id INTEGER REFERENCES messages(id), seen_at INTEGER NOT NULL, PRIMARY KEY (account, uidl)) WITHOUT ROWID;
CREATE INDEX uidls_message ON uidls(message_id) WHERE message_id IS NOT NULL;
CREATE TABLE deliveries(id INTEGER PRIMARY KEY, message_id INTEGER NOT NULL REFERENCES messages(id), account TEXT NOT NULL, webhook TEXT NOT NULL, status INTEGER NOT NULL CHECK (status BETWEEN 0 AND 3), attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, delivered_at INTEGER NOT NULL DEFAULT 0, last_http_status INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '', claimed_at INTEGER, UNIQUE (message_id, webhook));
CREATE INDEX deliveries_due ON deliveries(next_attempt_at, id) WHERE status IN (0, 2) AND claimed_at IS NULL;
CREATE INDEX deliveries_status ON deliveries(status, id);
CREATE INDEX deliveries_account ON deliveries(account, id);
CREATE INDEX deliveries_account_status ON deliveries(account, status, id);
CREATE TABLE attempts(id INTEGER PRIMARY KEY, delivery_id INTEGER NOT NULL REFERENCES deliveries(id), started_at INTEGER NOT NULL, duration_ms INTEGER NOT NULL, http_status INTEGER NOT NULL, error TEXT NOT NULL, outcome TEXT NOT NULL);
CREATE INDEX attempts_delivery ON attempts(delivery_id, id);
CREATE TABLE webhooks_disabled(name TEXT PRIMARY KEY, reason TEXT NOT NULL, since INTEGER NOT NULL);
INSERT INTO messages VALUES (1, 'acc', 'u1', 3, 'b5d4045c3f466fa91fe2cc6abe79232a1a57cdf104f7a26e716e0a1e2789df78', 5, 'Old', NULL, NULL, NULL, NULL, NULL, 'message', 0);
INSERT INTO bodies VALUES (1, X'414243');
INSERT INTO uidls VALUES ('acc', 'u1', 1, 1, 5);
INSERT INTO deliveries(message_id, account, webhook, status, attempts, next_attempt_at, created_at, updated_at, claimed_at) VALUES (1, 'acc', 'crm', 2, 1, 7, 5, 6, 8);
PRAGMA user_version = 2;

-- Idempotency keys of the REST API's writes (`Idempotency-Key`): which transaction a named
-- request sent, so that a retry of it is answered by that transaction, also after a restart.
-- `scope` is the sha256 of the caller's account address and `key_hash` that of the key (hex,
-- so that MariaDB's collations compare them as SQLite does): one caller's keys never meet
-- another's. Rows live a day.
CREATE TABLE idempotency_keys (
    scope CHAR(64) NOT NULL,
    key_hash CHAR(64) NOT NULL,
    fingerprint CHAR(64) NOT NULL,
    tx CHAR(66) NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key_hash)
);
CREATE INDEX idempotency_keys_by_time ON idempotency_keys (created_at);

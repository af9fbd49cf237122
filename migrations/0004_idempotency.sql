-- Idempotency keys of the REST API's writes (`Idempotency-Key`): which transaction a named
-- request sent, so that a retry of it is answered by that transaction, also after a restart.
-- `scope` is the sha256 of the caller's API token (hex): one caller's keys never meet
-- another's. Rows live a day.
CREATE TABLE idempotency_keys (
    scope CHAR(64) NOT NULL,
    idem_key VARCHAR(255) NOT NULL,
    fingerprint CHAR(64) NOT NULL,
    tx CHAR(66) NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_by_time ON idempotency_keys (created_at);

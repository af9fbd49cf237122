-- The gateway's own data. One file for SQLite and MySQL/MariaDB: keep the SQL portable
-- (VARCHAR keys, BIGINT, BLOB/VARBINARY, no upserts); tests run it on both.

-- Web accounts. The key is a Web3 secret-storage keystore (scrypt), unlocked only by the
-- user's password at login.
CREATE TABLE accounts (
    username VARCHAR(32) NOT NULL PRIMARY KEY,
    role VARCHAR(16) NOT NULL,
    address CHAR(42) NOT NULL,
    patient_aid BIGINT NULL,
    patient_pid BIGINT NULL,
    keystore TEXT NOT NULL,
    profile_name VARCHAR(100) NULL,
    profile_organisation VARCHAR(100) NULL,
    profile_licence VARCHAR(100) NULL,
    created_at BIGINT NOT NULL
);

-- Web sessions: sha256 of the cookie, the user's key sealed under a key derived from the
-- cookie (so the table alone neither logs in nor signs).
CREATE TABLE sessions (
    token_hash VARBINARY(32) NOT NULL PRIMARY KEY,
    username VARCHAR(32) NOT NULL,
    csrf CHAR(64) NOT NULL,
    wrapped_key VARBINARY(128) NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (username);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen);

-- Personal API tokens: sha256 of the token, the key sealed under a key derived from it.
CREATE TABLE api_tokens (
    id CHAR(8) NOT NULL PRIMARY KEY,
    username VARCHAR(32) NOT NULL,
    name VARCHAR(64) NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    token_hash VARBINARY(32) NOT NULL,
    wrapped_key VARBINARY(128) NOT NULL
);
CREATE INDEX api_tokens_by_user ON api_tokens (username);

-- The contract's events, decoded (JSON), per deployment; and how far each is indexed.
CREATE TABLE chain_events (
    deployment_id VARBINARY(32) NOT NULL,
    block_number BIGINT NOT NULL,
    log_index BIGINT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (deployment_id, block_number, log_index)
);
CREATE TABLE chain_index (
    deployment_id VARBINARY(32) NOT NULL PRIMARY KEY,
    next_block BIGINT NOT NULL,
    last_hash VARBINARY(32) NOT NULL
);

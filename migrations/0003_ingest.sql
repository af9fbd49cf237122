-- Readings from patients' devices. A reading is acknowledged once its row is committed here,
-- and deleted once it is sealed into an encrypted record on IPFS and the share nodes. The
-- envelope is kept encrypted at rest (under a key derived from the ingestion service's key).
CREATE TABLE ingest_readings (
    device CHAR(42) NOT NULL,
    nonce BIGINT NOT NULL,
    patient_aid BIGINT NOT NULL,
    patient_pid BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    observations INT NOT NULL,
    observed_from BIGINT NOT NULL,
    observed_to BIGINT NOT NULL,
    envelope MEDIUMBLOB NOT NULL,
    seal_id CHAR(32) NULL,
    PRIMARY KEY (device, nonce)
);
CREATE INDEX ingest_readings_by_patient ON ingest_readings (patient_aid, patient_pid, seal_id, received_at);
CREATE INDEX ingest_readings_by_seal ON ingest_readings (seal_id);

-- Every nonce a device used, until its signing time is too old to pass the clock check (then
-- a replay is refused as stale): the readings' own key does not outlive their sealing.
CREATE TABLE ingest_nonces (
    device CHAR(42) NOT NULL,
    nonce BIGINT NOT NULL,
    signed_at BIGINT NOT NULL,
    PRIMARY KEY (device, nonce)
);
CREATE INDEX ingest_nonces_by_time ON ingest_nonces (signed_at);

-- Windows of readings being sealed (record NULL) or sealed into a record.
CREATE TABLE ingest_seals (
    id CHAR(32) NOT NULL PRIMARY KEY,
    patient_aid BIGINT NOT NULL,
    patient_pid BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    envelopes INT NOT NULL,
    observations INT NOT NULL,
    observed_from BIGINT NOT NULL,
    observed_to BIGINT NOT NULL,
    record CHAR(66) NULL,
    sealed_at BIGINT NULL
);
CREATE INDEX ingest_seals_pending ON ingest_seals (record);
CREATE INDEX ingest_seals_by_patient ON ingest_seals (patient_aid, patient_pid, observed_to);

-- Refused readings per day and reason, for the records office's dashboard.
CREATE TABLE ingest_refusals (
    day BIGINT NOT NULL,
    reason VARCHAR(32) NOT NULL,
    refused BIGINT NOT NULL,
    PRIMARY KEY (day, reason)
);

-- Downloads of a patient's audit trail (FHIR or CSV): a download is itself an access to
-- who-saw-what, so it is recorded and shown to the patient and the records office.
CREATE TABLE audit_exports (
    id CHAR(32) NOT NULL PRIMARY KEY,
    username VARCHAR(32) NOT NULL,
    patient_aid BIGINT NOT NULL,
    patient_pid BIGINT NOT NULL,
    format VARCHAR(16) NOT NULL,
    events BIGINT NOT NULL,
    exported_at BIGINT NOT NULL
);
CREATE INDEX audit_exports_by_patient ON audit_exports (patient_aid, patient_pid, exported_at);
CREATE INDEX audit_exports_by_time ON audit_exports (exported_at);

-- Diagnoses of a run over time: each is the packed Diagnosis message of one
-- analysis, so a user can see when a symptom or cause appeared.
CREATE TABLE diagnoses (
    id            INTEGER PRIMARY KEY,
    run           INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step          INTEGER,
    time          REAL NOT NULL,
    health        TEXT NOT NULL,
    message       BLOB NOT NULL
);
CREATE INDEX diagnoses_run ON diagnoses(run, id);

-- Runs, the streams (one client process reporting one rank) that feed them,
-- and their telemetry. Per-layer statistics are stored packed: one row holds
-- up to chunk_steps consecutive steps of one stream (docs/storage.md).

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,  -- assigned by the daemon
    uid           TEXT NOT NULL UNIQUE, -- RunStart.run_id
    name          TEXT,
    world_size    INTEGER NOT NULL,
    started       REAL NOT NULL,        -- unix seconds
    updated       REAL NOT NULL,
    last_step     INTEGER,
    steps_stored  INTEGER NOT NULL DEFAULT 0,
    dropped       INTEGER NOT NULL DEFAULT 0,
    end_status    INTEGER,              -- EndStatus once every stream ended
    ended         REAL,
    labels        TEXT,                 -- comma list of causes; NULL = unknown
    description   BLOB                  -- RunStart of the lowest rank
);
CREATE INDEX runs_name ON runs(name);
CREATE INDEX runs_updated ON runs(updated);

CREATE TABLE streams (
    id            INTEGER PRIMARY KEY,  -- stream id (uint64 stored as int64)
    run           INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    rank          INTEGER NOT NULL,
    host          TEXT,
    pid           INTEGER,
    n_layers      INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL,     -- highest committed sequence number
    started       REAL NOT NULL,
    updated       REAL NOT NULL,
    end_status    INTEGER
);
CREATE INDEX streams_run ON streams(run);

CREATE TABLE step_chunks (
    run           INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    stream        INTEGER NOT NULL,
    first_step    INTEGER NOT NULL,
    last_step     INTEGER NOT NULL,
    n_steps       INTEGER NOT NULL,
    n_layers      INTEGER NOT NULL,
    data          BLOB NOT NULL         -- n_steps packed step records
);
CREATE INDEX step_chunks_run ON step_chunks(run, stream, first_step);

-- Epoch summaries and run ends keep the message as received: NaN and Inf
-- are legal values, and SQLite would store NaN as NULL.
CREATE TABLE epochs (
    run           INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    stream        INTEGER NOT NULL,
    epoch         INTEGER NOT NULL,
    step          INTEGER,
    time          REAL NOT NULL,
    message       BLOB NOT NULL
);
CREATE INDEX epochs_run ON epochs(run, epoch);

CREATE TABLE run_ends (
    stream        INTEGER PRIMARY KEY,
    run           INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    status        INTEGER NOT NULL,
    step          INTEGER,
    time          REAL NOT NULL,
    message       BLOB NOT NULL
);
CREATE INDEX run_ends_run ON run_ends(run);

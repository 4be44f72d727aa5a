-- Clients report drop counts per stream; a run's count is their sum.
ALTER TABLE streams ADD COLUMN dropped INTEGER NOT NULL DEFAULT 0;
UPDATE streams SET dropped = (SELECT dropped FROM runs WHERE runs.id = streams.run)
    WHERE id IN (SELECT min(id) FROM streams GROUP BY run);

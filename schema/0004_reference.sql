-- A run's reference run (RunStart.reference or dnnfaultctl reference): the
-- name or id as given, resolved when used; NULL = none.
ALTER TABLE runs ADD COLUMN reference TEXT;

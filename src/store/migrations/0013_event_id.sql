-- An event's id (`event_id`), kept as a keyed hash so that a retried event is counted once:
-- the same game and id within the retention window is one event. It lives in the event's row
-- and so goes with it, at the retention cut-off or a forget. Events sent without an id have
-- none (NULL), and the partial index holds only those that do.
ALTER TABLE measure_logs ADD COLUMN event_key BLOB CHECK (length(event_key) = 16);
CREATE UNIQUE INDEX measure_logs_event_key ON measure_logs (event_key)
    WHERE event_key IS NOT NULL;

-- Return rates are counted when they are read, from the events on file (README, Aggregates):
-- the events of a day range are found through their own time. Event times mostly grow with
-- arrival, so this index is written at its end, not at a random place.
CREATE INDEX measure_logs_time ON measure_logs (event_time);

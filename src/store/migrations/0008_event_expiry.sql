-- An event goes at the retention cut-off by the earlier of its arrival and its own time (a game
-- may report an open up to the retention window late). The hourly purge finds them through
-- this index instead of reading the whole table; arrival alone was indexed before.
DROP INDEX measure_logs_received_at;
CREATE INDEX measure_logs_expiry ON measure_logs (min(received_at, event_time));

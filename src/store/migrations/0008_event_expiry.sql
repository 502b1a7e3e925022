-- An event goes at the retention cut-off by the earlier of its arrival and its own time (a game
-- may report an open up to the retention window late), or with the salt its user pseudonym is
-- keyed by (a returning player keeps the pseudonym of the first salt, invariant 4). The hourly
-- purge finds both through this index, one range per salt, instead of reading the whole table;
-- arrival alone was indexed before.
DROP INDEX measure_logs_received_at;
CREATE INDEX measure_logs_expiry ON measure_logs (user_salt_id, min(received_at, event_time));

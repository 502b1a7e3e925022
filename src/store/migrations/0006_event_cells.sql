-- A game event names the conversion cell it counts in, and the user index ends with it, so
-- whether a player is new to a cell is one probe of that index. The list of each cell's users
-- (a second random write per event, and a second copy of every user pseudonym) is gone.
ALTER TABLE measure_logs ADD COLUMN cell_id INTEGER;
UPDATE measure_logs SET cell_id = (
    SELECT c.id FROM conversion_cells c
    WHERE c.day = strftime('%Y-%m-%d', measure_logs.event_time, 'unixepoch')
      AND c.game = measure_logs.game AND c.source = coalesce(measure_logs.source, '(direct)')
      AND c.medium = coalesce(measure_logs.medium, '')
      AND c.campaign = coalesce(measure_logs.campaign, '')
      AND c.content = coalesce(measure_logs.content, '')
      AND c.term = coalesce(measure_logs.term, '')
      AND c.platform = coalesce(measure_logs.platform, '')
      AND c.storefront = coalesce(measure_logs.storefront, '')
      AND c.event = measure_logs.event
);
DROP TABLE conversion_users;
DROP INDEX measure_logs_user;
CREATE INDEX measure_logs_user ON measure_logs (user_hash, user_salt_id, cell_id);

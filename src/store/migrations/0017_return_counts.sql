-- Returns are kept in the conversion cells as events arrive and go (store::returns), no longer
-- counted from the events at each read. Counted once here from the events on file, by the same
-- definition: of a cell's players, those with an event on the next day (D1), or on one of the
-- next seven (D7). In sorted passes over scratch tables: a probe per cell or per event would
-- take hours on a large store.
ALTER TABLE conversion_cells ADD COLUMN returned_d1 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversion_cells ADD COLUMN returned_d7 INTEGER NOT NULL DEFAULT 0;
CREATE TEMP TABLE active_days (
  user_hash BLOB, user_salt_id INTEGER, day INTEGER,
  PRIMARY KEY (user_hash, user_salt_id, day)
) WITHOUT ROWID;
INSERT OR IGNORE INTO active_days
  SELECT user_hash, user_salt_id, event_time / 86400 FROM measure_logs;
CREATE TEMP TABLE cell_players (
  cell_id INTEGER, user_hash BLOB, user_salt_id INTEGER, day INTEGER,
  PRIMARY KEY (cell_id, user_hash, user_salt_id)
) WITHOUT ROWID;
INSERT OR IGNORE INTO cell_players
  SELECT cell_id, user_hash, user_salt_id, event_time / 86400 FROM measure_logs
  WHERE cell_id IS NOT NULL;
CREATE TEMP TABLE cell_returns (cell_id INTEGER PRIMARY KEY, d1 INTEGER, d7 INTEGER);
INSERT INTO cell_returns
  SELECT p.cell_id,
    sum(EXISTS (SELECT 1 FROM active_days a
      WHERE a.user_hash = p.user_hash AND a.user_salt_id = p.user_salt_id
        AND a.day = p.day + 1)),
    sum(EXISTS (SELECT 1 FROM active_days a
      WHERE a.user_hash = p.user_hash AND a.user_salt_id = p.user_salt_id
        AND a.day BETWEEN p.day + 1 AND p.day + 7))
  FROM cell_players p GROUP BY p.cell_id;
UPDATE conversion_cells SET
  returned_d1 = coalesce((SELECT d1 FROM cell_returns r WHERE r.cell_id = conversion_cells.id), 0),
  returned_d7 = coalesce((SELECT d7 FROM cell_returns r WHERE r.cell_id = conversion_cells.id), 0);
DROP TABLE temp.active_days;
DROP TABLE temp.cell_players;
DROP TABLE temp.cell_returns;

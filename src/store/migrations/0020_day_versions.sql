-- Each day's version of its roll-up rows, bumped in the same transaction as any change to a
-- cell of the day, by triggers: whatever writes the cells (the writer, a forget or purge run
-- beside the daemon, a later migration) bumps it, so a reader that rendered a day at one
-- version knows the rendering is current while the version is unchanged
-- (attribution::rendered). A row holds a day and a count, nothing of anyone; rows are never
-- deleted, so a day's version never comes back to a value it had.
CREATE TABLE day_versions (
    day     TEXT    PRIMARY KEY,   -- UTC, YYYY-MM-DD
    version INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER traffic_cells_bump_day_on_insert AFTER INSERT ON traffic_cells BEGIN
    INSERT INTO day_versions (day, version) VALUES (NEW.day, 1)
        ON CONFLICT (day) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER traffic_cells_bump_day_on_update AFTER UPDATE ON traffic_cells BEGIN
    INSERT INTO day_versions (day, version) VALUES (NEW.day, 1)
        ON CONFLICT (day) DO UPDATE SET version = version + 1;
    INSERT INTO day_versions (day, version) SELECT OLD.day, 1 WHERE OLD.day <> NEW.day
        ON CONFLICT (day) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER traffic_cells_bump_day_on_delete AFTER DELETE ON traffic_cells BEGIN
    INSERT INTO day_versions (day, version) VALUES (OLD.day, 1)
        ON CONFLICT (day) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER conversion_cells_bump_day_on_insert AFTER INSERT ON conversion_cells BEGIN
    INSERT INTO day_versions (day, version) VALUES (NEW.day, 1)
        ON CONFLICT (day) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER conversion_cells_bump_day_on_update AFTER UPDATE ON conversion_cells BEGIN
    INSERT INTO day_versions (day, version) VALUES (NEW.day, 1)
        ON CONFLICT (day) DO UPDATE SET version = version + 1;
    INSERT INTO day_versions (day, version) SELECT OLD.day, 1 WHERE OLD.day <> NEW.day
        ON CONFLICT (day) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER conversion_cells_bump_day_on_delete AFTER DELETE ON conversion_cells BEGIN
    INSERT INTO day_versions (day, version) VALUES (OLD.day, 1)
        ON CONFLICT (day) DO UPDATE SET version = version + 1;
END;

-- The days already on file start at version 1.
INSERT INTO day_versions (day, version)
    SELECT day, 1 FROM traffic_cells UNION SELECT day, 1 FROM conversion_cells;

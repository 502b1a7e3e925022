-- The channel dimension (a server-side visit's `channel`, e.g. "paid_social"): a column of
-- the visits, of the events that carry their visit's campaign, and of both kinds of cell. A
-- cell's unique key gains it, which SQLite can only do by rebuilding the table; the cells keep
-- their ids, which visitor lists and events point at. Rows on file have no channel ('').

ALTER TABLE collect_logs ADD COLUMN channel TEXT;
ALTER TABLE measure_logs ADD COLUMN channel TEXT;

CREATE TABLE traffic_cells_new (
    id               INTEGER PRIMARY KEY,
    day              TEXT    NOT NULL,   -- UTC, YYYY-MM-DD
    game             TEXT    NOT NULL,
    source           TEXT    NOT NULL,
    medium           TEXT    NOT NULL,
    campaign         TEXT    NOT NULL,
    content          TEXT    NOT NULL,
    term             TEXT    NOT NULL,
    channel          TEXT    NOT NULL,
    referrer_host    TEXT    NOT NULL,
    device           TEXT    NOT NULL,
    visits           INTEGER NOT NULL DEFAULT 0,
    visitors         INTEGER NOT NULL DEFAULT 0,
    consented_visits INTEGER NOT NULL DEFAULT 0,
    UNIQUE (day, game, source, medium, campaign, content, term, channel, referrer_host, device)
);
INSERT INTO traffic_cells_new (id, day, game, source, medium, campaign, content, term, channel,
                               referrer_host, device, visits, visitors, consented_visits)
    SELECT id, day, game, source, medium, campaign, content, term, '', referrer_host, device,
           visits, visitors, consented_visits
    FROM traffic_cells;
DROP TABLE traffic_cells;
ALTER TABLE traffic_cells_new RENAME TO traffic_cells;

CREATE TABLE conversion_cells_new (
    id          INTEGER PRIMARY KEY,
    day         TEXT    NOT NULL,        -- UTC day of the event's time
    game        TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    medium      TEXT    NOT NULL,
    campaign    TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    term        TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    platform    TEXT    NOT NULL,
    storefront  TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    events      INTEGER NOT NULL DEFAULT 0,
    users       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (day, game, source, medium, campaign, content, term, channel, platform, storefront,
            event)
);
INSERT INTO conversion_cells_new (id, day, game, source, medium, campaign, content, term,
                                  channel, platform, storefront, event, events, users)
    SELECT id, day, game, source, medium, campaign, content, term, '', platform, storefront,
           event, events, users
    FROM conversion_cells;
DROP TABLE conversion_cells;
ALTER TABLE conversion_cells_new RENAME TO conversion_cells;

-- The country dimension: ISO 3166-1 alpha-2, resolved from the address at ingest when
-- `privacy.geoip_db` is set (the address itself is never stored). A column of the visits
-- (the visitor's country), of the events (the player's own, from the event's address, not the
-- visit's), and of both kinds of cell. A cell's unique key gains it, which SQLite can only do
-- by rebuilding the table (as in 0009); the cells keep their ids, which visitor lists and
-- events point at. Rows on file have no country ('' in cells, NULL in the logs).

ALTER TABLE collect_logs ADD COLUMN country TEXT;
ALTER TABLE measure_logs ADD COLUMN country TEXT;

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
    country          TEXT    NOT NULL,
    visits           INTEGER NOT NULL DEFAULT 0,
    visitors         INTEGER NOT NULL DEFAULT 0,
    consented_visits INTEGER NOT NULL DEFAULT 0,
    UNIQUE (day, game, source, medium, campaign, content, term, channel, referrer_host, device,
            country)
);
INSERT INTO traffic_cells_new (id, day, game, source, medium, campaign, content, term, channel,
                               referrer_host, device, country, visits, visitors,
                               consented_visits)
    SELECT id, day, game, source, medium, campaign, content, term, channel, referrer_host,
           device, '', visits, visitors, consented_visits
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
    country     TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    events      INTEGER NOT NULL DEFAULT 0,
    users       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (day, game, source, medium, campaign, content, term, channel, platform, storefront,
            country, event)
);
INSERT INTO conversion_cells_new (id, day, game, source, medium, campaign, content, term,
                                  channel, platform, storefront, country, event, events, users)
    SELECT id, day, game, source, medium, campaign, content, term, channel, platform,
           storefront, '', event, events, users
    FROM conversion_cells;
DROP TABLE conversion_cells;
ALTER TABLE conversion_cells_new RENAME TO conversion_cells;

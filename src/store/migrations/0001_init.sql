-- The first schema: pseudonymised visits and game events, and the salts that key them.
-- Times are unix seconds (UTC). Hashes are 16-byte keyed BLAKE3 digests; *_salt_id names the
-- salt a hash was made with, so a destroyed salt takes its rows' linkability with it.

CREATE TABLE salts (
    id          INTEGER PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    salt        BLOB    NOT NULL CHECK (length(salt) = 32)
);

CREATE TABLE collect_logs (
    id              INTEGER PRIMARY KEY,
    received_at     INTEGER NOT NULL,
    game            TEXT,
    ip_hash         BLOB    NOT NULL CHECK (length(ip_hash) = 16),
    ip_salt_id      INTEGER NOT NULL,
    page_host       TEXT    NOT NULL,
    page_path       TEXT    NOT NULL,
    utm_source      TEXT,
    utm_medium      TEXT,
    utm_campaign    TEXT,
    utm_content     TEXT,
    utm_term        TEXT,
    click_ids       TEXT,   -- JSON object, only when consent was given
    referrer_host   TEXT,
    device          TEXT    NOT NULL,
    os              TEXT    NOT NULL,
    browser         TEXT    NOT NULL,
    consent         INTEGER NOT NULL CHECK (consent IN (0, 1)),
    link            TEXT,   -- the /r/{link} name when the visit came through a redirect link
    view_id         TEXT    -- random per page view, lives in the browser's memory only
);
CREATE INDEX collect_logs_received_at ON collect_logs (received_at);
CREATE INDEX collect_logs_ip ON collect_logs (ip_hash, ip_salt_id);

CREATE TABLE measure_logs (
    id              INTEGER PRIMARY KEY,
    received_at     INTEGER NOT NULL,
    event_time      INTEGER NOT NULL,
    game            TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    user_hash       BLOB    NOT NULL CHECK (length(user_hash) = 16),
    user_salt_id    INTEGER NOT NULL,
    ip_hash         BLOB    NOT NULL CHECK (length(ip_hash) = 16),
    ip_salt_id      INTEGER NOT NULL,
    platform        TEXT,
    storefront      TEXT,
    visit_id        INTEGER -- the collect_logs row this event is attributed to, if any
);
CREATE INDEX measure_logs_received_at ON measure_logs (received_at);
CREATE INDEX measure_logs_user ON measure_logs (user_hash, user_salt_id);

-- A traffic cell's visitors and the visits of an address are keyed at random places of their
-- tables; the writer keeps the newest in memory and writes them later in key order
-- (store/deferred.rs). `through`: every visit up to it has its entries in the table named; at
-- start the entries of the visits after it are made again from the visits.
CREATE TABLE deferred_written (
    name    TEXT    PRIMARY KEY,
    through INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO deferred_written (name, through)
    SELECT 'traffic_visitors', coalesce(max(id), 0) FROM collect_logs;
INSERT INTO deferred_written (name, through)
    SELECT 'visit_addresses', coalesce(max(id), 0) FROM collect_logs;

-- What the index collect_logs_ip held, as a table of its own: the visits of an address (under
-- a salt) in time order. A deleted visit takes its entry along.
CREATE TABLE visit_addresses (
    ip_hash     BLOB    NOT NULL,
    ip_salt_id  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    visit_id    INTEGER NOT NULL,
    PRIMARY KEY (ip_hash, ip_salt_id, received_at, visit_id)
) WITHOUT ROWID;
INSERT INTO visit_addresses (ip_hash, ip_salt_id, received_at, visit_id)
    SELECT ip_hash, ip_salt_id, received_at, id FROM collect_logs;
DROP INDEX collect_logs_ip;
CREATE TRIGGER visit_addresses_follow_deletions AFTER DELETE ON collect_logs BEGIN
    DELETE FROM visit_addresses
    WHERE ip_hash = old.ip_hash AND ip_salt_id = old.ip_salt_id
      AND received_at = old.received_at AND visit_id = old.id;
END;

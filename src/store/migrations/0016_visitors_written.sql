-- A traffic cell's visitor entries are written some time after their visits, in key order
-- (store/visitors.rs): every visit up to `through` has its entry in traffic_visitors, and at
-- start the entries of the visits after it are made again from the visits. Every visit on file
-- now has its entry.
CREATE TABLE traffic_visitors_written (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    through INTEGER NOT NULL
);
INSERT INTO traffic_visitors_written (id, through)
    SELECT 1, coalesce(max(id), 0) FROM collect_logs;

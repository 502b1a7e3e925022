-- Forget requests leave a trace of when and how much, never of whom.
CREATE TABLE forget_log (
    id                INTEGER PRIMARY KEY,
    at                INTEGER NOT NULL,
    measure_deleted   INTEGER NOT NULL,
    collect_deleted   INTEGER NOT NULL
);

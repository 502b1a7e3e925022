-- One row that `/healthz`, and the writer after a failed sync of the WAL, rewrite to prove that
-- a write reaches the disk: an empty commit writes nothing, so it succeeded on a full disk.
-- It holds a count of probes, nothing about anyone.
CREATE TABLE write_probe (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    probes INTEGER NOT NULL
);

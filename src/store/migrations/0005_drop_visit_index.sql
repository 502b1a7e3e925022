-- Nothing looks events up by the visit they are attributed to (forgetting starts from the
-- event row), and each linked event cost this index a write at a random place.
DROP INDEX measure_logs_visit;

-- The distinct counts (`visitors`, `users`) are decided from the records themselves: a visit
-- or event adds a visitor or user to its cell when no earlier record of the same pseudonym
-- that day has the same cell key. The lists of members kept beside the cells cost a write at
-- a random place per record and a second copy of every pseudonym, and are gone.
DROP TABLE traffic_visitors;
DROP TABLE conversion_users;

-- A user's records of one day are found by the index alone, however many days they played.
DROP INDEX measure_logs_user;
CREATE INDEX measure_logs_user ON measure_logs (user_hash, user_salt_id, event_time);

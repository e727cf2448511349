-- A fencing token per outbox job: every claim raises it, and an answer is recorded only under
-- the newest claim, so a worker whose lease ran out cannot overwrite a newer worker's step.
ALTER TABLE outbox ADD COLUMN lease INTEGER NOT NULL DEFAULT 0;

-- The outbox: a confirmed automatic refund gets a job here in the same transaction that moves
-- it to Processing. The worker claims due jobs (pushing next_attempt_ms forward as a lease, so a
-- crash mid-send only delays a retry), asks the operator, and records each step. A job is done
-- when the refund has a definite outcome (Completed or Failed).
CREATE TABLE outbox (
    refund_id       INTEGER PRIMARY KEY REFERENCES refunds (id),
    operator        TEXT NOT NULL,
    -- send: the next step sends the refund (again, under the same idempotency key);
    -- query: the next step asks the operator for the refund's status; done: nothing left to do
    state           TEXT NOT NULL CHECK (state IN ('send', 'query', 'done')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_attempt_ms) WHERE state <> 'done';

-- Only a Processing refund settles, and only once.
CREATE TRIGGER refunds_settle_only_processing BEFORE UPDATE OF status ON refunds
WHEN NEW.status IN ('Failed') AND OLD.status <> 'Processing'
BEGIN
    SELECT RAISE(ABORT, 'only a refund being processed can fail');
END;

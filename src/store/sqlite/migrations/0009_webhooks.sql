-- The shop's webhooks: endpoints, the refund events written with each change, and one delivery
-- per event and subscribed endpoint (see src/refunds/events.rs and src/webhooks.rs).
CREATE TABLE webhook_endpoints (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    url             TEXT NOT NULL,
    -- comma-separated event types, e.g. 'refund.completed,refund.failed'
    events          TEXT NOT NULL,
    -- the HMAC key shared with the receiver (so: treat the database as a secret)
    secret          TEXT NOT NULL,
    enabled         INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    disabled_reason TEXT,
    created_ms      INTEGER NOT NULL,
    last_success_ms INTEGER
);

CREATE TABLE webhook_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    type         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    refund_id    INTEGER NOT NULL,
    source_type  TEXT NOT NULL,
    source_id    INTEGER NOT NULL,
    payment_id   INTEGER,
    status       TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    date_add     INTEGER NOT NULL,
    date_confirm INTEGER,
    external_id  TEXT,
    channel      TEXT NOT NULL,
    caller       TEXT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id     INTEGER NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_seq       INTEGER NOT NULL REFERENCES webhook_events (seq),
    refund_id       INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state = 'pending' OR state = 'delivered' OR state = 'failed'),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    lease           INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_ms    INTEGER,
    UNIQUE (endpoint_id, event_seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_in_order
    ON webhook_deliveries (endpoint_id, refund_id, event_seq) WHERE state = 'pending';

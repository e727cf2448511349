-- The shop's webhooks (see src/refunds/events.rs and src/webhooks.rs): endpoints, the refund
-- events written with each change, one delivery per event and subscribed endpoint.
CREATE TABLE webhook_endpoints (
    id              bigserial PRIMARY KEY,
    url             text NOT NULL,
    -- comma-separated event types, e.g. 'refund.completed,refund.failed'
    events          text NOT NULL,
    -- the HMAC key shared with the receiver (so: treat the database as a secret)
    secret          text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_ms      bigint NOT NULL,
    last_success_ms bigint
);

CREATE TABLE webhook_events (
    seq          bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    type         text NOT NULL,
    created_at   bigint NOT NULL,
    refund_id    bigint NOT NULL,
    source_type  text NOT NULL,
    source_id    bigint NOT NULL,
    payment_id   bigint,
    status       text NOT NULL,
    amount_minor bigint NOT NULL,
    currency     text NOT NULL,
    date_add     bigint NOT NULL,
    date_confirm bigint,
    external_id  text,
    channel      text NOT NULL,
    caller       text NOT NULL
);

CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    endpoint_id     bigint NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_seq       bigint NOT NULL REFERENCES webhook_events (seq),
    refund_id       bigint NOT NULL,
    state           text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        bigint NOT NULL DEFAULT 0,
    next_attempt_ms bigint NOT NULL,
    created_ms      bigint NOT NULL,
    lease           bigint NOT NULL DEFAULT 0,
    last_status     bigint,
    last_error      text,
    delivered_ms    bigint,
    UNIQUE (endpoint_id, event_seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_in_order
    ON webhook_deliveries (endpoint_id, refund_id, event_seq) WHERE state = 'pending';

-- A return or claim with refunds keeps its order and currency (its refunds name that order and
-- are in that currency); that its value stays above what is refunded is its CHECK constraint.
CREATE FUNCTION claims_keep_refunded_identity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.order_id <> OLD.order_id OR NEW.currency <> OLD.currency)
       AND EXISTS (SELECT 1 FROM refunds WHERE source_type = TG_ARGV[0] AND source_id = OLD.id)
    THEN
        RAISE EXCEPTION 'a % with refunds keeps its order and currency', TG_ARGV[0];
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER returns_keep_refunded_identity BEFORE UPDATE OF order_id, currency ON returns
    FOR EACH ROW EXECUTE FUNCTION claims_keep_refunded_identity('return');
CREATE TRIGGER rmas_keep_refunded_identity BEFORE UPDATE OF order_id, currency ON rmas
    FOR EACH ROW EXECUTE FUNCTION claims_keep_refunded_identity('rma');

-- Legacy logins never contain ':' (API keys are `key:{name}`, the service's own callers
-- `outbox:…` and `operator:…`), so no login can share another caller's name.
ALTER TABLE api_users ADD CONSTRAINT api_users_login_without_colon
    CHECK (position(':' in login) = 0);

-- The ledger on PostgreSQL: the same tables, totals and guards as SQLite's migrations 0001-0007,
-- written once in their final form. Amounts are integer minor units of the row's currency.
-- Running totals (paid_minor, refunded_minor) are kept by triggers in the writing transaction,
-- and CHECK constraints on them make over-refunding impossible whatever code path writes: the
-- service checks first and answers with a fault code; these are the guard behind it. Each
-- trigger's UPDATE takes the row lock of the total it changes, so two instances adding refunds
-- to one payment queue on that row, and the second sees the first's total.

CREATE TABLE payment_forms (
    id   bigint PRIMARY KEY CHECK (id > 0),
    name text NOT NULL
);
INSERT INTO payment_forms (id, name) VALUES
    (1, 'cash'), (2, 'bank transfer'), (3, 'customer balance'), (4, 'postal order');

CREATE TABLE orders (
    id             bigint PRIMARY KEY CHECK (id > 0),
    currency       text NOT NULL CHECK (length(currency) = 3),
    fulfilled      boolean NOT NULL,
    paid_minor     bigint NOT NULL DEFAULT 0,
    refunded_minor bigint NOT NULL DEFAULT 0,
    CHECK (refunded_minor >= 0 AND refunded_minor <= paid_minor)
);

-- Payments and refunds draw their ids from this one sequence. Imported payments bring their own
-- ids; the import moves the sequence past them.
CREATE SEQUENCE movement_ids;
CREATE TABLE movements (
    id   bigint PRIMARY KEY DEFAULT nextval('movement_ids') CHECK (id > 0),
    kind text NOT NULL CHECK (kind IN ('payment', 'refund'))
);
ALTER SEQUENCE movement_ids OWNED BY movements.id;

CREATE TABLE payments (
    id                      bigint PRIMARY KEY REFERENCES movements (id),
    order_id                bigint NOT NULL REFERENCES orders (id),
    amount_minor            bigint NOT NULL CHECK (amount_minor > 0),
    currency                text NOT NULL,
    payment_form_id         bigint NOT NULL,
    payment_system          bigint,
    auto_refund             boolean NOT NULL,
    external_transaction_id text,
    paid_at                 bigint NOT NULL,
    -- live automatic refunds drawn from this payment
    refunded_minor          bigint NOT NULL DEFAULT 0,
    CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor)
);
CREATE INDEX payments_by_order ON payments (order_id, paid_at, id);

CREATE TABLE returns (
    id             bigint PRIMARY KEY CHECK (id > 0),
    order_id       bigint NOT NULL REFERENCES orders (id),
    value_minor    bigint NOT NULL CHECK (value_minor > 0),
    currency       text NOT NULL,
    refunded_minor bigint NOT NULL DEFAULT 0,
    CHECK (refunded_minor >= 0 AND refunded_minor <= value_minor)
);

CREATE TABLE rmas (
    id             bigint PRIMARY KEY CHECK (id > 0),
    order_id       bigint NOT NULL REFERENCES orders (id),
    value_minor    bigint NOT NULL CHECK (value_minor > 0),
    currency       text NOT NULL,
    refunded_minor bigint NOT NULL DEFAULT 0,
    CHECK (refunded_minor >= 0 AND refunded_minor <= value_minor)
);

CREATE TABLE refunds (
    id              bigint PRIMARY KEY REFERENCES movements (id),
    order_id        bigint NOT NULL REFERENCES orders (id),
    source_type     text NOT NULL CHECK (source_type IN ('order', 'return', 'rma')),
    source_id       bigint NOT NULL,
    method          text NOT NULL CHECK (method IN ('automatic', 'manual')),
    payment_id      bigint REFERENCES payments (id),
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    currency        text NOT NULL,
    status          text NOT NULL
                    CHECK (status IN ('New', 'Processing', 'Completed', 'Failed', 'Canceled')),
    payment_form_id bigint REFERENCES payment_forms (id),
    payment_system  bigint,
    account         text,
    client_account  text,
    created_at      bigint NOT NULL,
    created_by      text NOT NULL,
    confirmed_at    bigint,
    external_id     text,
    CHECK ((method = 'automatic') = (payment_id IS NOT NULL)),
    CHECK ((method = 'manual') = (payment_form_id IS NOT NULL)),
    CHECK (status <> 'Processing' OR method = 'automatic')
);
CREATE INDEX refunds_unapproved ON refunds (source_type, id) WHERE status = 'New';
CREATE INDEX refunds_unapproved_by_id ON refunds (id) WHERE status = 'New';
CREATE INDEX refunds_by_source ON refunds (source_type, source_id);
CREATE INDEX refunds_by_payment ON refunds (payment_id);
CREATE INDEX refunds_by_order ON refunds (order_id);

CREATE TABLE api_users (
    login         text PRIMARY KEY,
    -- sha1(password), lowercase hex: the legacy key is sha1(YYYYMMDD || sha1(password))
    password_sha1 text NOT NULL,
    scopes        text NOT NULL,
    created_at    bigint NOT NULL
);

-- Only a SHA-256 of each key is kept.
CREATE TABLE api_keys (
    name       text PRIMARY KEY,
    key_sha256 text NOT NULL UNIQUE,
    scopes     text NOT NULL,
    created_at bigint NOT NULL,
    revoked_at bigint
);

-- The outbox (see SQLite's 0003 and 0007): one job per confirmed automatic refund, added in the
-- transaction that moves it to Processing; claimed with a lease and a fencing token.
CREATE TABLE outbox (
    refund_id       bigint PRIMARY KEY REFERENCES refunds (id),
    operator        text NOT NULL,
    state           text NOT NULL CHECK (state IN ('send', 'query', 'done')),
    attempts        bigint NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_ms bigint NOT NULL,
    last_error      text,
    created_ms      bigint NOT NULL,
    updated_ms      bigint NOT NULL,
    lease           bigint NOT NULL DEFAULT 0
);
CREATE INDEX outbox_due ON outbox (next_attempt_ms, refund_id) WHERE state <> 'done';

-- The audit trail: append-only, a hash chain (see src/refunds/audit.rs). Writes on several
-- instances run side by side, so an entry is inserted unchained (seq, prev_hash and hash NULL)
-- in its business transaction, and one sealer at a time (an advisory lock) chains committed
-- entries in `id` order: no row every write would have to lock.
CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    seq           bigint UNIQUE CHECK (seq > 0),
    at            bigint NOT NULL,
    actor         text NOT NULL,
    channel       text NOT NULL,
    operation     text NOT NULL,
    refund_id     bigint NOT NULL,
    status_before text,
    status_after  text NOT NULL,
    amount_before bigint,
    amount_after  bigint NOT NULL,
    currency      text NOT NULL,
    request_id    text,
    prev_hash     text,
    hash          text UNIQUE,
    CHECK ((seq IS NULL) = (prev_hash IS NULL) AND (seq IS NULL) = (hash IS NULL))
);
CREATE INDEX audit_by_refund ON audit_log (refund_id, seq);
CREATE INDEX audit_unsealed ON audit_log (id) WHERE seq IS NULL;

-- Idempotency keys: the first answer to a write, replayed for a retry with the same key and
-- the same request. The plain INSERT in the business transaction is the claim: of two instances
-- racing with one key, the second waits for the first and gets a unique violation.
CREATE TABLE idempotency_keys (
    caller       text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    status       integer NOT NULL,
    content_type text NOT NULL,
    body         bytea NOT NULL,
    created_at   bigint NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_by_age ON idempotency_keys (created_at);

-- How many refunds each (source type, status) pair holds, kept by triggers in the writing
-- transaction. One row per pair would be a row every add on every instance locks until commit;
-- each pair is split over 16 shards chosen by the refund's id (a refund always counts in its
-- own shard, so every shard stays >= 0), and readers add the shards up.
CREATE TABLE refund_counts (
    source_type text NOT NULL,
    status      text NOT NULL,
    shard       integer NOT NULL CHECK (shard >= 0 AND shard < 16),
    n           bigint NOT NULL CHECK (n >= 0),
    PRIMARY KEY (source_type, status, shard)
);
INSERT INTO refund_counts (source_type, status, shard, n)
SELECT t, s, shard, 0
FROM unnest(ARRAY['order', 'return', 'rma']) AS t
CROSS JOIN unnest(ARRAY['New', 'Processing', 'Completed', 'Failed', 'Canceled']) AS s
CROSS JOIN generate_series(0, 15) AS shard;

-- Order totals follow their payments. Add before subtracting so that moving an amount never
-- dips below what is already refunded in between.
CREATE FUNCTION payments_count_paid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE orders SET paid_minor = paid_minor + NEW.amount_minor WHERE id = NEW.order_id;
    ELSIF NEW.amount_minor <> OLD.amount_minor OR NEW.order_id <> OLD.order_id THEN
        IF OLD.refunded_minor > 0
           AND (NEW.order_id <> OLD.order_id OR NEW.currency <> OLD.currency) THEN
            RAISE EXCEPTION 'a refunded payment keeps its order and currency';
        END IF;
        UPDATE orders SET paid_minor = paid_minor + NEW.amount_minor WHERE id = NEW.order_id;
        UPDATE orders SET paid_minor = paid_minor - OLD.amount_minor WHERE id = OLD.order_id;
    ELSIF OLD.refunded_minor > 0 AND NEW.currency <> OLD.currency THEN
        RAISE EXCEPTION 'a refunded payment keeps its order and currency';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER payments_count_paid AFTER INSERT OR UPDATE ON payments
FOR EACH ROW EXECUTE FUNCTION payments_count_paid();

CREATE FUNCTION never_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted', TG_TABLE_NAME;
END $$;
CREATE TRIGGER payments_never_deleted BEFORE DELETE ON payments
FOR EACH ROW EXECUTE FUNCTION never_deleted();
CREATE TRIGGER refunds_never_deleted BEFORE DELETE ON refunds
FOR EACH ROW EXECUTE FUNCTION never_deleted();
CREATE TRIGGER payments_never_truncated BEFORE TRUNCATE ON payments
FOR EACH STATEMENT EXECUTE FUNCTION never_deleted();
CREATE TRIGGER refunds_never_truncated BEFORE TRUNCATE ON refunds
FOR EACH STATEMENT EXECUTE FUNCTION never_deleted();

CREATE FUNCTION orders_keep_refunded_currency() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.currency <> OLD.currency AND EXISTS (SELECT 1 FROM refunds WHERE order_id = OLD.id) THEN
        RAISE EXCEPTION 'an order with refunds keeps its currency';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER orders_keep_refunded_currency BEFORE UPDATE OF currency ON orders
FOR EACH ROW EXECUTE FUNCTION orders_keep_refunded_currency();

-- A refund is consistent with what it refunds, keeps what it refunds, and a final state is final.
CREATE FUNCTION refunds_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.currency IS DISTINCT FROM (SELECT currency FROM orders WHERE id = NEW.order_id) THEN
            RAISE EXCEPTION 'refund currency differs from its order';
        END IF;
        IF NEW.payment_id IS NOT NULL AND (SELECT order_id FROM payments WHERE id = NEW.payment_id)
               IS DISTINCT FROM NEW.order_id THEN
            RAISE EXCEPTION 'refunded payment belongs to another order';
        END IF;
        IF (NEW.source_type = 'order' AND NEW.source_id <> NEW.order_id)
           OR (NEW.source_type = 'return'
               AND (SELECT order_id FROM returns WHERE id = NEW.source_id) IS DISTINCT FROM NEW.order_id)
           OR (NEW.source_type = 'rma'
               AND (SELECT order_id FROM rmas WHERE id = NEW.source_id) IS DISTINCT FROM NEW.order_id) THEN
            RAISE EXCEPTION 'refund source belongs to another order';
        END IF;
        IF (SELECT kind FROM movements WHERE id = NEW.id) IS DISTINCT FROM 'refund' THEN
            RAISE EXCEPTION 'refund id is not a refund movement';
        END IF;
        RETURN NEW;
    END IF;
    IF (NEW.id, NEW.order_id, NEW.source_type, NEW.source_id, NEW.method, NEW.payment_id, NEW.currency)
       IS DISTINCT FROM
       (OLD.id, OLD.order_id, OLD.source_type, OLD.source_id, OLD.method, OLD.payment_id, OLD.currency) THEN
        RAISE EXCEPTION 'a refund keeps what it refunds';
    END IF;
    IF OLD.status IN ('Completed', 'Failed', 'Canceled')
       AND (NEW.status <> OLD.status OR NEW.amount_minor <> OLD.amount_minor) THEN
        RAISE EXCEPTION 'a refund in a final state does not change';
    END IF;
    IF NEW.status = 'Failed' AND OLD.status <> 'Processing' THEN
        RAISE EXCEPTION 'only a refund being processed can fail';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refunds_check BEFORE INSERT OR UPDATE ON refunds
FOR EACH ROW EXECUTE FUNCTION refunds_check();

-- Live refunds (New, Processing, Completed) hold their amount against the order, the payment
-- (automatic refunds) and the return or claim; the kept counts follow every insert and status
-- change. A change that keeps a live refund live at the same amount (confirming, settling as
-- Completed) touches no total: the release-then-reserve of SQLite's trigger would take the
-- same row locks for nothing.
CREATE FUNCTION refunds_hold(refund refunds, sign bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE orders SET refunded_minor = refunded_minor + sign * refund.amount_minor
    WHERE id = refund.order_id;
    IF refund.payment_id IS NOT NULL THEN
        UPDATE payments SET refunded_minor = refunded_minor + sign * refund.amount_minor
        WHERE id = refund.payment_id;
    END IF;
    IF refund.source_type = 'return' THEN
        UPDATE returns SET refunded_minor = refunded_minor + sign * refund.amount_minor
        WHERE id = refund.source_id;
    ELSIF refund.source_type = 'rma' THEN
        UPDATE rmas SET refunded_minor = refunded_minor + sign * refund.amount_minor
        WHERE id = refund.source_id;
    END IF;
END $$;

CREATE FUNCTION refunds_reserve() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_live boolean := TG_OP = 'UPDATE' AND OLD.status IN ('New', 'Processing', 'Completed');
    new_live boolean := NEW.status IN ('New', 'Processing', 'Completed');
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE refund_counts SET n = n + 1
        WHERE source_type = NEW.source_type AND status = NEW.status AND shard = NEW.id % 16;
    ELSIF NEW.status <> OLD.status THEN
        UPDATE refund_counts SET n = n - 1
        WHERE source_type = OLD.source_type AND status = OLD.status AND shard = OLD.id % 16;
        UPDATE refund_counts SET n = n + 1
        WHERE source_type = NEW.source_type AND status = NEW.status AND shard = NEW.id % 16;
    END IF;
    IF old_live AND new_live AND NEW.amount_minor = OLD.amount_minor THEN
        RETURN NULL;
    END IF;
    -- Release first, then reserve, so that a changed amount is checked against the totals
    -- without the old one.
    IF old_live THEN
        PERFORM refunds_hold(OLD, -1);
    END IF;
    IF new_live THEN
        PERFORM refunds_hold(NEW, 1);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER refunds_reserve AFTER INSERT OR UPDATE OF amount_minor, status ON refunds
FOR EACH ROW EXECUTE FUNCTION refunds_reserve();

-- The audit trail refuses updates and deletes, except the one update that chains an unchained
-- entry: setting its position and hashes, nothing else.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.seq IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL
       AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL
       AND (NEW.id, NEW.at, NEW.actor, NEW.channel, NEW.operation, NEW.refund_id,
            NEW.status_before, NEW.status_after, NEW.amount_before, NEW.amount_after,
            NEW.currency, NEW.request_id)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.at, OLD.actor, OLD.channel, OLD.operation, OLD.refund_id,
            OLD.status_before, OLD.status_after, OLD.amount_before, OLD.amount_after,
            OLD.currency, OLD.request_id) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_never_truncated BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

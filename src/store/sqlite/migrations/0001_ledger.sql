-- The ledger. Amounts are integer minor units of the row's currency (ISO 4217 exponent).
-- The running totals (paid_minor, refunded_minor) are kept by triggers, and CHECK constraints on
-- them make over-refunding impossible whatever code path writes: the service layer checks first
-- and answers with a fault code; these are the guard behind it.

CREATE TABLE payment_forms (
    id   INTEGER PRIMARY KEY CHECK (id > 0),
    name TEXT NOT NULL
);
INSERT INTO payment_forms (id, name) VALUES
    (1, 'cash'), (2, 'bank transfer'), (3, 'customer balance'), (4, 'postal order');

CREATE TABLE orders (
    id             INTEGER PRIMARY KEY CHECK (id > 0),
    currency       TEXT NOT NULL CHECK (length(currency) = 3),
    fulfilled      INTEGER NOT NULL CHECK (fulfilled IN (0, 1)),
    paid_minor     INTEGER NOT NULL DEFAULT 0,
    refunded_minor INTEGER NOT NULL DEFAULT 0,
    CHECK (refunded_minor >= 0 AND refunded_minor <= paid_minor)
);

-- Payments and refunds draw their ids from this one sequence.
CREATE TABLE movements (
    id   INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id > 0),
    kind TEXT NOT NULL CHECK (kind IN ('payment', 'refund'))
);

CREATE TABLE payments (
    id                      INTEGER PRIMARY KEY REFERENCES movements (id),
    order_id                INTEGER NOT NULL REFERENCES orders (id),
    amount_minor            INTEGER NOT NULL CHECK (amount_minor > 0),
    currency                TEXT NOT NULL,
    payment_form_id         INTEGER NOT NULL,
    payment_system          INTEGER,
    auto_refund             INTEGER NOT NULL CHECK (auto_refund IN (0, 1)),
    external_transaction_id TEXT,
    paid_at                 INTEGER NOT NULL,
    -- live automatic refunds drawn from this payment
    refunded_minor          INTEGER NOT NULL DEFAULT 0,
    CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor)
);
CREATE INDEX payments_by_order ON payments (order_id, paid_at, id);

CREATE TABLE returns (
    id             INTEGER PRIMARY KEY CHECK (id > 0),
    order_id       INTEGER NOT NULL REFERENCES orders (id),
    value_minor    INTEGER NOT NULL CHECK (value_minor > 0),
    currency       TEXT NOT NULL,
    refunded_minor INTEGER NOT NULL DEFAULT 0,
    CHECK (refunded_minor >= 0 AND refunded_minor <= value_minor)
);

CREATE TABLE rmas (
    id             INTEGER PRIMARY KEY CHECK (id > 0),
    order_id       INTEGER NOT NULL REFERENCES orders (id),
    value_minor    INTEGER NOT NULL CHECK (value_minor > 0),
    currency       TEXT NOT NULL,
    refunded_minor INTEGER NOT NULL DEFAULT 0,
    CHECK (refunded_minor >= 0 AND refunded_minor <= value_minor)
);

CREATE TABLE refunds (
    id              INTEGER PRIMARY KEY REFERENCES movements (id),
    order_id        INTEGER NOT NULL REFERENCES orders (id),
    source_type     TEXT NOT NULL CHECK (source_type IN ('order', 'return', 'rma')),
    source_id       INTEGER NOT NULL,
    method          TEXT NOT NULL CHECK (method IN ('automatic', 'manual')),
    payment_id      INTEGER REFERENCES payments (id),
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status IN ('New', 'Processing', 'Completed', 'Failed', 'Canceled')),
    payment_form_id INTEGER REFERENCES payment_forms (id),
    payment_system  INTEGER,
    account         TEXT,
    client_account  TEXT,
    created_at      INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    confirmed_at    INTEGER,
    external_id     TEXT,
    CHECK ((method = 'automatic') = (payment_id IS NOT NULL)),
    CHECK ((method = 'manual') = (payment_form_id IS NOT NULL)),
    CHECK (status <> 'Processing' OR method = 'automatic')
);
CREATE INDEX refunds_unapproved ON refunds (source_type, id) WHERE status = 'New';
CREATE INDEX refunds_by_source ON refunds (source_type, source_id);

CREATE TABLE api_users (
    login         TEXT PRIMARY KEY,
    -- sha1(password), lowercase hex: the legacy key is sha1(YYYYMMDD || sha1(password))
    password_sha1 TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

-- Order totals follow their payments. Add before subtracting so that moving an amount never
-- dips below what is already refunded in between.
CREATE TRIGGER payments_count_paid AFTER INSERT ON payments
BEGIN
    UPDATE orders SET paid_minor = paid_minor + NEW.amount_minor WHERE id = NEW.order_id;
END;

CREATE TRIGGER payments_recount_paid AFTER UPDATE OF amount_minor, order_id ON payments
BEGIN
    UPDATE orders SET paid_minor = paid_minor + NEW.amount_minor WHERE id = NEW.order_id;
    UPDATE orders SET paid_minor = paid_minor - OLD.amount_minor WHERE id = OLD.order_id;
END;

CREATE TRIGGER payments_keep_refunded_identity BEFORE UPDATE OF order_id, currency ON payments
WHEN OLD.refunded_minor > 0 AND (NEW.order_id <> OLD.order_id OR NEW.currency <> OLD.currency)
BEGIN
    SELECT RAISE(ABORT, 'a refunded payment keeps its order and currency');
END;

CREATE TRIGGER payments_never_deleted BEFORE DELETE ON payments
BEGIN
    SELECT RAISE(ABORT, 'payments are never deleted');
END;

CREATE TRIGGER orders_keep_refunded_currency BEFORE UPDATE OF currency ON orders
WHEN NEW.currency <> OLD.currency AND EXISTS (SELECT 1 FROM refunds WHERE order_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'an order with refunds keeps its currency');
END;

-- A refund is consistent with what it refunds.
CREATE TRIGGER refunds_check_consistency BEFORE INSERT ON refunds
BEGIN
    SELECT RAISE(ABORT, 'refund currency differs from its order')
    WHERE NEW.currency IS NOT (SELECT currency FROM orders WHERE id = NEW.order_id);
    SELECT RAISE(ABORT, 'refunded payment belongs to another order')
    WHERE NEW.payment_id IS NOT NULL
      AND (SELECT order_id FROM payments WHERE id = NEW.payment_id) IS NOT NEW.order_id;
    SELECT RAISE(ABORT, 'refund source belongs to another order')
    WHERE (NEW.source_type = 'order' AND NEW.source_id <> NEW.order_id)
       OR (NEW.source_type = 'return'
           AND (SELECT order_id FROM returns WHERE id = NEW.source_id) IS NOT NEW.order_id)
       OR (NEW.source_type = 'rma'
           AND (SELECT order_id FROM rmas WHERE id = NEW.source_id) IS NOT NEW.order_id);
    SELECT RAISE(ABORT, 'refund id is not a refund movement')
    WHERE (SELECT kind FROM movements WHERE id = NEW.id) IS NOT 'refund';
END;

CREATE TRIGGER refunds_keep_identity
BEFORE UPDATE OF id, order_id, source_type, source_id, method, payment_id, currency ON refunds
BEGIN
    SELECT RAISE(ABORT, 'a refund keeps what it refunds');
END;

CREATE TRIGGER refunds_final_states BEFORE UPDATE ON refunds
WHEN OLD.status IN ('Completed', 'Failed', 'Canceled')
 AND (NEW.status <> OLD.status OR NEW.amount_minor <> OLD.amount_minor)
BEGIN
    SELECT RAISE(ABORT, 'a refund in a final state does not change');
END;

CREATE TRIGGER refunds_never_deleted BEFORE DELETE ON refunds
BEGIN
    SELECT RAISE(ABORT, 'refunds are never deleted');
END;

-- Live refunds (New, Processing, Completed) hold their amount against the order, the payment
-- (automatic refunds) and the return or claim.
CREATE TRIGGER refunds_reserve AFTER INSERT ON refunds
WHEN NEW.status IN ('New', 'Processing', 'Completed')
BEGIN
    UPDATE orders SET refunded_minor = refunded_minor + NEW.amount_minor WHERE id = NEW.order_id;
    UPDATE payments SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE id = NEW.payment_id;
    UPDATE returns SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE NEW.source_type = 'return' AND id = NEW.source_id;
    UPDATE rmas SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE NEW.source_type = 'rma' AND id = NEW.source_id;
END;

-- Release the old reservation first, then take the new one, so that lowering or raising an
-- amount is checked against the totals without it.
CREATE TRIGGER refunds_rereserve AFTER UPDATE OF amount_minor, status ON refunds
BEGIN
    UPDATE orders SET refunded_minor = refunded_minor - OLD.amount_minor
    WHERE id = OLD.order_id AND OLD.status IN ('New', 'Processing', 'Completed');
    UPDATE payments SET refunded_minor = refunded_minor - OLD.amount_minor
    WHERE id = OLD.payment_id AND OLD.status IN ('New', 'Processing', 'Completed');
    UPDATE returns SET refunded_minor = refunded_minor - OLD.amount_minor
    WHERE OLD.source_type = 'return' AND id = OLD.source_id
      AND OLD.status IN ('New', 'Processing', 'Completed');
    UPDATE rmas SET refunded_minor = refunded_minor - OLD.amount_minor
    WHERE OLD.source_type = 'rma' AND id = OLD.source_id
      AND OLD.status IN ('New', 'Processing', 'Completed');

    UPDATE orders SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE id = NEW.order_id AND NEW.status IN ('New', 'Processing', 'Completed');
    UPDATE payments SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE id = NEW.payment_id AND NEW.status IN ('New', 'Processing', 'Completed');
    UPDATE returns SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE NEW.source_type = 'return' AND id = NEW.source_id
      AND NEW.status IN ('New', 'Processing', 'Completed');
    UPDATE rmas SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE NEW.source_type = 'rma' AND id = NEW.source_id
      AND NEW.status IN ('New', 'Processing', 'Completed');
END;

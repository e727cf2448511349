-- The same triggers as 0001's, with `status IN ('New', 'Processing', 'Completed')` written as
-- comparisons joined by OR. SQLite evaluates an IN list of three or more values by building a
-- small in-memory table each time the trigger runs; confirming a refund ran nine of them. The
-- meaning is unchanged: a live refund (New, Processing, Completed) holds its amount.

DROP TRIGGER refunds_final_states;
CREATE TRIGGER refunds_final_states BEFORE UPDATE ON refunds
WHEN (OLD.status = 'Completed' OR OLD.status = 'Failed' OR OLD.status = 'Canceled')
 AND (NEW.status <> OLD.status OR NEW.amount_minor <> OLD.amount_minor)
BEGIN
    SELECT RAISE(ABORT, 'a refund in a final state does not change');
END;

DROP TRIGGER refunds_reserve;
CREATE TRIGGER refunds_reserve AFTER INSERT ON refunds
WHEN NEW.status = 'New' OR NEW.status = 'Processing' OR NEW.status = 'Completed'
BEGIN
    UPDATE orders SET refunded_minor = refunded_minor + NEW.amount_minor WHERE id = NEW.order_id;
    UPDATE payments SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE id = NEW.payment_id;
    UPDATE returns SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE NEW.source_type = 'return' AND id = NEW.source_id;
    UPDATE rmas SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE NEW.source_type = 'rma' AND id = NEW.source_id;
END;

DROP TRIGGER refunds_rereserve;
CREATE TRIGGER refunds_rereserve AFTER UPDATE OF amount_minor, status ON refunds
BEGIN
    UPDATE orders SET refunded_minor = refunded_minor - OLD.amount_minor
    WHERE id = OLD.order_id
      AND (OLD.status = 'New' OR OLD.status = 'Processing' OR OLD.status = 'Completed');
    UPDATE payments SET refunded_minor = refunded_minor - OLD.amount_minor
    WHERE id = OLD.payment_id
      AND (OLD.status = 'New' OR OLD.status = 'Processing' OR OLD.status = 'Completed');
    UPDATE returns SET refunded_minor = refunded_minor - OLD.amount_minor
    WHERE OLD.source_type = 'return' AND id = OLD.source_id
      AND (OLD.status = 'New' OR OLD.status = 'Processing' OR OLD.status = 'Completed');
    UPDATE rmas SET refunded_minor = refunded_minor - OLD.amount_minor
    WHERE OLD.source_type = 'rma' AND id = OLD.source_id
      AND (OLD.status = 'New' OR OLD.status = 'Processing' OR OLD.status = 'Completed');

    UPDATE orders SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE id = NEW.order_id
      AND (NEW.status = 'New' OR NEW.status = 'Processing' OR NEW.status = 'Completed');
    UPDATE payments SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE id = NEW.payment_id
      AND (NEW.status = 'New' OR NEW.status = 'Processing' OR NEW.status = 'Completed');
    UPDATE returns SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE NEW.source_type = 'return' AND id = NEW.source_id
      AND (NEW.status = 'New' OR NEW.status = 'Processing' OR NEW.status = 'Completed');
    UPDATE rmas SET refunded_minor = refunded_minor + NEW.amount_minor
    WHERE NEW.source_type = 'rma' AND id = NEW.source_id
      AND (NEW.status = 'New' OR NEW.status = 'Processing' OR NEW.status = 'Completed');
END;

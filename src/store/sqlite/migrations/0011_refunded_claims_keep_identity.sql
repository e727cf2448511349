-- A return or claim (RMA) with refunds keeps its order and currency, as a refunded payment does
-- (0001's payments_keep_refunded_identity): its refunds name that order and are in that
-- currency, so moving it would mix currencies in its refunded total and detach its refunds.
-- Any refund counts, not only live ones: a cancelled refund still names the order. That its
-- value never drops below what is refunded is the tables' CHECK constraint.
CREATE TRIGGER returns_keep_refunded_identity BEFORE UPDATE OF order_id, currency ON returns
WHEN (NEW.order_id <> OLD.order_id OR NEW.currency <> OLD.currency)
 AND EXISTS (SELECT 1 FROM refunds WHERE source_type = 'return' AND source_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'a return with refunds keeps its order and currency');
END;

CREATE TRIGGER rmas_keep_refunded_identity BEFORE UPDATE OF order_id, currency ON rmas
WHEN (NEW.order_id <> OLD.order_id OR NEW.currency <> OLD.currency)
 AND EXISTS (SELECT 1 FROM refunds WHERE source_type = 'rma' AND source_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'a claim with refunds keeps its order and currency');
END;

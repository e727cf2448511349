-- The refunds drawn from one payment, for its ledger proof.
CREATE INDEX refunds_by_payment ON refunds (payment_id) WHERE payment_id IS NOT NULL;

-- How many refunds each (source type, status) pair holds, kept by triggers in the same
-- transaction as the change, so that the list's total and the monitoring counts are one lookup
-- each instead of a scan over every refund. Refunds are never deleted and keep their source
-- type (0001's triggers), so inserts and status changes are the only moves.
CREATE TABLE refund_counts (
    source_type TEXT NOT NULL,
    status      TEXT NOT NULL,
    n           INTEGER NOT NULL CHECK (n >= 0),
    PRIMARY KEY (source_type, status)
) WITHOUT ROWID;

INSERT INTO refund_counts (source_type, status, n)
SELECT types.column1, statuses.column1,
       (SELECT count(*) FROM refunds
        WHERE source_type = types.column1 AND status = statuses.column1)
FROM (VALUES ('order'), ('return'), ('rma')) AS types
CROSS JOIN (VALUES ('New'), ('Processing'), ('Completed'), ('Failed'), ('Canceled')) AS statuses;

CREATE TRIGGER refund_counts_insert AFTER INSERT ON refunds
BEGIN
    UPDATE refund_counts SET n = n + 1
    WHERE source_type = NEW.source_type AND status = NEW.status;
END;

CREATE TRIGGER refund_counts_status AFTER UPDATE OF status ON refunds
WHEN NEW.status <> OLD.status
BEGIN
    UPDATE refund_counts SET n = n - 1
    WHERE source_type = OLD.source_type AND status = OLD.status;
    UPDATE refund_counts SET n = n + 1
    WHERE source_type = NEW.source_type AND status = NEW.status;
END;

-- The unapproved refunds of every source type in id order, for a list without a type filter.
CREATE INDEX refunds_unapproved_by_id ON refunds (id) WHERE status = 'New';

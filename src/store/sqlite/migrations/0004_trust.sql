-- The audit trail: append-only, a hash chain (see src/refunds/audit.rs).
CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    channel       TEXT NOT NULL,
    operation     TEXT NOT NULL,
    refund_id     INTEGER NOT NULL,
    status_before TEXT,
    status_after  TEXT NOT NULL,
    amount_before INTEGER,
    amount_after  INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    request_id    TEXT,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE
);
CREATE INDEX audit_by_refund ON audit_log (refund_id, seq);

CREATE TRIGGER audit_never_updated BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;

CREATE TRIGGER audit_never_deleted BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;

-- Idempotency keys: the first answer to a write, replayed for a retry with the same key and
-- the same request. `principal` is the caller (legacy login or `key:{name}`).
CREATE TABLE idempotency_keys (
    principal    TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    body         BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_by_age ON idempotency_keys (created_at);

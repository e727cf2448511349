-- The admin panel: its users, their sessions and failed sign-ins (see src/refunds/panel.rs).
-- They live in the ledger so that every instance on one database shares them.

-- A panel user: an argon2id hash in PHC string form, never the legacy sha1 scheme.
CREATE TABLE admin_users (
    login         TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- A signed-in session, named by the SHA-256 of its 128-bit random id (the id itself is only
-- in the browser's cookie), with the CSRF token its forms carry.
CREATE TABLE admin_sessions (
    id_sha256    TEXT PRIMARY KEY,
    login        TEXT NOT NULL REFERENCES admin_users (login) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);

-- Failed sign-ins per subject (`login:{login}` or `address:{ip}`), for throttling.
CREATE TABLE admin_sign_in_failures (
    subject TEXT NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX admin_sign_in_failures_by_subject ON admin_sign_in_failures (subject, at);

-- The panel's chart counts refunds added per day by status.
CREATE INDEX refunds_by_created ON refunds (created_at, status);

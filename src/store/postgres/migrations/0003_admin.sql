-- The admin panel: its users, their sessions and failed sign-ins (see src/refunds/panel.rs),
-- shared by every instance on the database.

-- A panel user: an argon2id hash in PHC string form, never the legacy sha1 scheme.
CREATE TABLE admin_users (
    login         text PRIMARY KEY,
    password_hash text NOT NULL,
    scopes        text NOT NULL,
    updated_at    bigint NOT NULL
);

-- A signed-in session, named by the SHA-256 of its 128-bit random id, with the CSRF token its
-- forms carry.
CREATE TABLE admin_sessions (
    id_sha256    text PRIMARY KEY,
    login        text NOT NULL REFERENCES admin_users (login) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   bigint NOT NULL,
    last_seen_at bigint NOT NULL
);

-- Failed sign-ins per subject (`login:{login}` or `address:{ip}`), for throttling.
CREATE TABLE admin_sign_in_failures (
    subject text NOT NULL,
    at      bigint NOT NULL
);
CREATE INDEX admin_sign_in_failures_by_subject ON admin_sign_in_failures (subject, at);

-- The panel's chart counts refunds added per day by status.
CREATE INDEX refunds_by_created ON refunds (created_at, status);

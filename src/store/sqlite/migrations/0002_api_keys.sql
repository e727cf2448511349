-- API keys for the REST face (and accepted by the SOAP and JSON gates). Only a SHA-256 of each
-- key is kept: keys are long random strings, shown once when created.
CREATE TABLE api_keys (
    name       TEXT PRIMARY KEY,
    key_sha256 TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- The owner of an idempotency key is the caller (a legacy login, `key:{name}`, `panel:{login}`),
-- named `caller` as everywhere else in the service and in the PostgreSQL schema (it was
-- `principal`). Only the name changes: the primary key and every stored answer stay as they are.
ALTER TABLE idempotency_keys RENAME COLUMN principal TO caller;

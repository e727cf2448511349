-- Whether a `serve` process has the ledger open and has not closed it cleanly. A process that
-- ended without closing (killed, or stopped because its -wal file was deleted under it) may have
-- acknowledged refunds whose rows did not survive; the next start moves the id sequence forward
-- so that none of their ids is ever handed out again (see `begin_run` in src/store/sqlite/writer.rs).
CREATE TABLE ledger_runs (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    open INTEGER NOT NULL CHECK (open IN (0, 1))
);
INSERT INTO ledger_runs (id, open) VALUES (1, 0);

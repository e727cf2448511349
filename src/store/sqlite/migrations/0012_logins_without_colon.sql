-- A legacy login never contains ':', which separates a caller's kind from its name
-- (`key:{name}`, `outbox:{operator}`, `operator:{name}`): a login `key:rt` would share API key
-- rt's idempotency keys and audit name. Logins stored before this migration stay, and the
-- service refuses to authenticate them.
CREATE TRIGGER api_users_login_without_colon BEFORE INSERT ON api_users
WHEN instr(NEW.login, ':') > 0
BEGIN
    SELECT RAISE(ABORT, 'a legacy login must not contain '':''');
END;

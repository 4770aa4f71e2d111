-- 0020 auth rate limits: attempt counters for login and password reset, shared by every
-- `serve` replica (in-process counters would let an attacker spread attempts over replicas).
--
-- One row per bucket (for example 'login:account:<sha256 of the e-mail>' or
-- 'login:address:<ip>'), counting attempts in a fixed window that restarts when it has
-- passed. Buckets name hashes and addresses, never raw e-mails, and hold no tenant data, so
-- the table has no client_id and no row-level security; the application role may only
-- read and write rows, and stale rows are deleted by `serve` as it goes.

CREATE TABLE auth_rate_limits (
    bucket text PRIMARY KEY CHECK (length(bucket) BETWEEN 1 AND 200),
    window_start timestamptz NOT NULL,
    attempts integer NOT NULL CHECK (attempts >= 0)
);
CREATE INDEX auth_rate_limits_window_idx ON auth_rate_limits (window_start);

GRANT SELECT, INSERT, UPDATE, DELETE ON auth_rate_limits TO lifebox_app;

-- Every claim of an outbox row gets a token of its own, and every write that
-- acts on a claim (heartbeat, outcome, continuation, release) names it. The
-- lease owner names a process, and one process may hold a row twice in turn
-- (its lease expired under a worker that was still alive, and the same
-- process claimed it again); the token tells the two claims apart, so the
-- stale one changes nothing.
CREATE SEQUENCE outbox_lease_token_seq AS BIGINT;
ALTER TABLE outbox ADD COLUMN lease_token BIGINT;
-- Rows leased when this runs keep working for the workers that hold them:
-- only a claim made after this migration is fenced by its token.
COMMENT ON COLUMN outbox.lease_token IS
    'The current claim''s fencing token (from outbox_lease_token_seq); NULL while unleased';

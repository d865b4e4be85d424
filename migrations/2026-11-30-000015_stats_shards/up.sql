-- The rollup's counter rows were one per bucket: every transaction that
-- ended a pipeline updated the same (hour, ACTIVE) row and held its lock
-- until it committed, so concurrent completions committed one after
-- another. Each counter is now split into shards, one per group of
-- database sessions (the session's process id modulo 8): a transaction
-- adds to, and takes back from, its own session's shard, concurrent
-- sessions mostly write different rows, and readers add the shards up.
-- A shard alone may go below zero (one session counts an end, another
-- prunes it), so the per-row checks go; the sums keep their meaning.

CREATE FUNCTION stats_shard() RETURNS SMALLINT
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (pg_backend_pid() % 8)::smallint;

ALTER TABLE stats_step_failures
    DROP CONSTRAINT stats_step_failures_failed_attempts_check,
    DROP CONSTRAINT stats_step_failures_check,
    DROP CONSTRAINT stats_step_failures_pkey,
    ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0,
    ADD PRIMARY KEY (hour, step, shard);
ALTER TABLE stats_pipeline_ends
    DROP CONSTRAINT stats_pipeline_ends_pipelines_check,
    DROP CONSTRAINT stats_pipeline_ends_pkey,
    ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0,
    ADD PRIMARY KEY (hour, outcome, shard);
ALTER TABLE stats_activation_days
    DROP CONSTRAINT stats_activation_days_activations_check,
    DROP CONSTRAINT stats_activation_days_pkey,
    ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0,
    ADD PRIMARY KEY (day, plan, bin, shard);

-- The bins' bounds as a constant: computed by a query, they were computed
-- again for every statement that counted an activation.
DO $$
BEGIN
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION stats_activation_bounds() RETURNS INTERVAL[] '
        'LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN %L::interval[]',
        stats_activation_bounds());
END
$$;

CREATE OR REPLACE FUNCTION stats_rollup_add() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    counts_failures BOOLEAN;
    counts_ends BOOLEAN;
    counts_activations BOOLEAN;
    own_shard SMALLINT := stats_shard();
BEGIN
    -- One pass tells which counters the new rows touch. Most statements
    -- (claims, completions of steps) touch none, and each write skipped is
    -- a query fewer.
    SELECT coalesce(bool_or(kind IN ('STEP_RETRYING', 'STEP_FAILED', 'STEP_WARNING')), false),
           coalesce(bool_or(kind = 'STATE_CHANGED' AND attempt IS NOT NULL
                            AND state IN ('ACTIVE', 'FAILED', 'CANCELLED', 'NEEDS_ATTENTION')), false),
           coalesce(bool_or(kind = 'STATE_CHANGED' AND attempt IS NOT NULL AND state = 'ACTIVE'), false)
    INTO counts_failures, counts_ends, counts_activations
    FROM new_events;

    IF counts_failures THEN
        INSERT INTO stats_step_failures AS s (hour, step, shard, failed_attempts, given_up)
        SELECT stats_hour(e.create_time), coalesce(e.step, ''), own_shard, count(*),
               count(*) FILTER (WHERE e.kind <> 'STEP_RETRYING')
        FROM new_events e
        WHERE e.kind IN ('STEP_RETRYING', 'STEP_FAILED', 'STEP_WARNING')
        GROUP BY 1, 2
        ORDER BY 1, 2
        ON CONFLICT (hour, step, shard) DO UPDATE
        SET failed_attempts = s.failed_attempts + excluded.failed_attempts,
            given_up = s.given_up + excluded.given_up;
    END IF;

    IF counts_ends THEN
        -- AFTER the statement, `events` holds its rows too, so a
        -- NEEDS_ATTENTION finds its predecessor even when both came in one
        -- statement.
        INSERT INTO stats_pipeline_ends AS s (hour, outcome, shard, pipelines)
        SELECT stats_hour(e.create_time), e.state, own_shard, count(*)
        FROM new_events e
        WHERE e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL
          AND e.state IN ('ACTIVE', 'FAILED', 'CANCELLED', 'NEEDS_ATTENTION')
          AND (e.state <> 'NEEDS_ATTENTION' OR stats_state_before(e.tenant_id, e.id) = 'PROVISIONING')
        GROUP BY 1, 2
        ORDER BY 1, 2
        ON CONFLICT (hour, outcome, shard) DO UPDATE SET pipelines = s.pipelines + excluded.pipelines;
    END IF;

    IF counts_activations THEN
        WITH added AS (
            INSERT INTO stats_activations (event_id, plan, bin, time_to_active, create_time)
            SELECT e.id, t.plan, stats_activation_bin(x.d), x.d, e.create_time
            FROM new_events e
            JOIN tenants t ON t.id = e.tenant_id
            CROSS JOIN LATERAL (SELECT e.create_time - t.create_time AS d) x
            WHERE e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL AND e.state = 'ACTIVE'
            RETURNING plan, bin, create_time
        )
        INSERT INTO stats_activation_days AS s (day, plan, bin, shard, activations)
        SELECT stats_day(create_time), plan, bin, own_shard, count(*)
        FROM added
        GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3
        ON CONFLICT (day, plan, bin, shard) DO UPDATE SET activations = s.activations + excluded.activations;
    END IF;
    RETURN NULL;
END
$$;

-- Deleting events (the prune job, a cascade from a deleted tenant) takes
-- their counts back out, from the deleting session's shard. One subtlety:
-- whether a NEEDS_ATTENTION counts depends on the event before it, so
-- deleting that event can change how a remaining NEEDS_ATTENTION counts;
-- those are recounted, per tenant that has one.
CREATE OR REPLACE FUNCTION stats_rollup_remove() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    own_shard SMALLINT := stats_shard();
BEGIN
    INSERT INTO stats_step_failures AS s (hour, step, shard, failed_attempts, given_up)
    SELECT stats_hour(e.create_time), coalesce(e.step, ''), own_shard, -count(*),
           -count(*) FILTER (WHERE e.kind <> 'STEP_RETRYING')
    FROM old_events e
    WHERE e.kind IN ('STEP_RETRYING', 'STEP_FAILED', 'STEP_WARNING')
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (hour, step, shard) DO UPDATE
    SET failed_attempts = s.failed_attempts + excluded.failed_attempts,
        given_up = s.given_up + excluded.given_up;

    WITH ends AS (
        SELECT e.id, e.tenant_id, e.state, e.create_time
        FROM old_events e
        WHERE e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL
          AND e.state IN ('ACTIVE', 'FAILED', 'CANCELLED', 'NEEDS_ATTENTION')
    ),
    -- Tenants with a NEEDS_ATTENTION end among the deleted or the remaining
    -- events, and all their events as they were before this statement.
    na_tenants AS (
        SELECT DISTINCT tenant_id FROM ends WHERE state = 'NEEDS_ATTENTION'
        UNION
        SELECT t.tenant_id
        FROM (SELECT DISTINCT tenant_id FROM old_events) t
        WHERE EXISTS (SELECT 1 FROM events e
                      WHERE e.tenant_id = t.tenant_id AND e.kind = 'STATE_CHANGED'
                        AND e.attempt IS NOT NULL AND e.state = 'NEEDS_ATTENTION')
    ),
    before AS (
        SELECT e.id, e.tenant_id, e.kind, e.attempt, e.state, e.create_time, false AS gone
        FROM events e JOIN na_tenants USING (tenant_id)
        UNION ALL
        SELECT e.id, e.tenant_id, e.kind, e.attempt, e.state, e.create_time, true
        FROM old_events e JOIN na_tenants USING (tenant_id)
    ),
    was AS (
        SELECT b.*, lag(b.state) OVER (PARTITION BY b.tenant_id ORDER BY b.id) AS prev
        FROM before b
    ),
    stays AS (
        SELECT b.id, lag(b.state) OVER (PARTITION BY b.tenant_id ORDER BY b.id) AS prev
        FROM before b WHERE NOT b.gone
    ),
    delta AS (
        -- Deleted ends other than NEEDS_ATTENTION: they counted.
        SELECT stats_hour(e.create_time) AS hour, e.state AS outcome, -1 AS pipelines
        FROM ends e WHERE e.state <> 'NEEDS_ATTENTION'
        UNION ALL
        -- NEEDS_ATTENTION ends: what they count now less what they counted.
        SELECT stats_hour(w.create_time), w.state,
               coalesce((NOT w.gone AND s.prev = 'PROVISIONING')::int, 0)
               - coalesce((w.prev = 'PROVISIONING')::int, 0)
        FROM was w LEFT JOIN stays s ON s.id = w.id
        WHERE w.kind = 'STATE_CHANGED' AND w.attempt IS NOT NULL AND w.state = 'NEEDS_ATTENTION'
    )
    INSERT INTO stats_pipeline_ends AS s (hour, outcome, shard, pipelines)
    SELECT hour, outcome, own_shard, sum(pipelines)
    FROM delta GROUP BY 1, 2 HAVING sum(pipelines) <> 0
    ORDER BY 1, 2
    ON CONFLICT (hour, outcome, shard) DO UPDATE SET pipelines = s.pipelines + excluded.pipelines;

    WITH gone AS (
        DELETE FROM stats_activations a
        USING old_events e
        WHERE a.event_id = e.id
          AND e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL AND e.state = 'ACTIVE'
        RETURNING a.plan, a.bin, a.create_time
    )
    INSERT INTO stats_activation_days AS s (day, plan, bin, shard, activations)
    SELECT stats_day(create_time), plan, bin, own_shard, -count(*)
    FROM gone
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (day, plan, bin, shard) DO UPDATE SET activations = s.activations + excluded.activations;
    RETURN NULL;
END
$$;

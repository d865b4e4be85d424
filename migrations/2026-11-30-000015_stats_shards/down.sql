-- Back to one counter row per bucket: the shards are added up first.
CREATE OR REPLACE FUNCTION stats_rollup_add() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    counts_failures BOOLEAN;
    counts_ends BOOLEAN;
    counts_activations BOOLEAN;
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
        INSERT INTO stats_step_failures AS s (hour, step, failed_attempts, given_up)
        SELECT stats_hour(e.create_time), coalesce(e.step, ''), count(*),
               count(*) FILTER (WHERE e.kind <> 'STEP_RETRYING')
        FROM new_events e
        WHERE e.kind IN ('STEP_RETRYING', 'STEP_FAILED', 'STEP_WARNING')
        GROUP BY 1, 2
        ORDER BY 1, 2
        ON CONFLICT (hour, step) DO UPDATE
        SET failed_attempts = s.failed_attempts + excluded.failed_attempts,
            given_up = s.given_up + excluded.given_up;
    END IF;

    IF counts_ends THEN
        -- AFTER the statement, `events` holds its rows too, so a
        -- NEEDS_ATTENTION finds its predecessor even when both came in one
        -- statement.
        INSERT INTO stats_pipeline_ends AS s (hour, outcome, pipelines)
        SELECT stats_hour(e.create_time), e.state, count(*)
        FROM new_events e
        WHERE e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL
          AND e.state IN ('ACTIVE', 'FAILED', 'CANCELLED', 'NEEDS_ATTENTION')
          AND (e.state <> 'NEEDS_ATTENTION' OR stats_state_before(e.tenant_id, e.id) = 'PROVISIONING')
        GROUP BY 1, 2
        ORDER BY 1, 2
        ON CONFLICT (hour, outcome) DO UPDATE SET pipelines = s.pipelines + excluded.pipelines;
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
        INSERT INTO stats_activation_days AS s (day, plan, bin, activations)
        SELECT stats_day(create_time), plan, bin, count(*)
        FROM added
        GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3
        ON CONFLICT (day, plan, bin) DO UPDATE SET activations = s.activations + excluded.activations;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION stats_rollup_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (
        SELECT stats_hour(e.create_time) AS hour, coalesce(e.step, '') AS step,
               count(*) AS failed_attempts,
               count(*) FILTER (WHERE e.kind <> 'STEP_RETRYING') AS given_up
        FROM old_events e
        WHERE e.kind IN ('STEP_RETRYING', 'STEP_FAILED', 'STEP_WARNING')
        GROUP BY 1, 2
    )
    UPDATE stats_step_failures s
    SET failed_attempts = s.failed_attempts - g.failed_attempts,
        given_up = s.given_up - g.given_up
    FROM gone g
    WHERE s.hour = g.hour AND s.step = g.step;

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
    ),
    changes AS (
        SELECT hour, outcome, sum(pipelines) AS pipelines
        FROM delta GROUP BY 1, 2 HAVING sum(pipelines) <> 0
    ),
    -- Apart, because INSERT checks its row before it finds the conflict,
    -- and a negative row breaks the CHECK.
    lowered AS (
        UPDATE stats_pipeline_ends s
        SET pipelines = s.pipelines + c.pipelines
        FROM changes c
        WHERE c.pipelines < 0 AND s.hour = c.hour AND s.outcome = c.outcome
    )
    INSERT INTO stats_pipeline_ends AS s (hour, outcome, pipelines)
    SELECT hour, outcome, pipelines FROM changes WHERE pipelines > 0 ORDER BY 1, 2
    ON CONFLICT (hour, outcome) DO UPDATE SET pipelines = s.pipelines + excluded.pipelines;

    WITH gone AS (
        DELETE FROM stats_activations a
        USING old_events e
        WHERE a.event_id = e.id
          AND e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL AND e.state = 'ACTIVE'
        RETURNING a.plan, a.bin, a.create_time
    ), counts AS (
        SELECT stats_day(create_time) AS day, plan, bin, count(*) AS activations
        FROM gone GROUP BY 1, 2, 3
    )
    UPDATE stats_activation_days s
    SET activations = s.activations - c.activations
    FROM counts c
    WHERE s.day = c.day AND s.plan = c.plan AND s.bin = c.bin;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION stats_activation_bounds() RETURNS INTERVAL[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(make_interval(secs => round(1.05 ^ k, 6)::float8) ORDER BY k)
    FROM generate_series(0, 360) k
$$;

CREATE TEMP TABLE failures AS
    SELECT hour, step, sum(failed_attempts) AS failed_attempts, sum(given_up) AS given_up
    FROM stats_step_failures GROUP BY 1, 2;
CREATE TEMP TABLE ends AS
    SELECT hour, outcome, sum(pipelines) AS pipelines FROM stats_pipeline_ends GROUP BY 1, 2;
CREATE TEMP TABLE days AS
    SELECT day, plan, bin, sum(activations) AS activations FROM stats_activation_days GROUP BY 1, 2, 3;
DELETE FROM stats_step_failures;
DELETE FROM stats_pipeline_ends;
DELETE FROM stats_activation_days;
ALTER TABLE stats_step_failures DROP CONSTRAINT stats_step_failures_pkey, DROP COLUMN shard;
ALTER TABLE stats_pipeline_ends DROP CONSTRAINT stats_pipeline_ends_pkey, DROP COLUMN shard;
ALTER TABLE stats_activation_days DROP CONSTRAINT stats_activation_days_pkey, DROP COLUMN shard;
INSERT INTO stats_step_failures SELECT * FROM failures;
INSERT INTO stats_pipeline_ends SELECT * FROM ends;
INSERT INTO stats_activation_days SELECT * FROM days;
ALTER TABLE stats_step_failures
    ADD PRIMARY KEY (hour, step),
    ADD CONSTRAINT stats_step_failures_failed_attempts_check CHECK (failed_attempts >= 0),
    ADD CONSTRAINT stats_step_failures_check CHECK (given_up BETWEEN 0 AND failed_attempts);
ALTER TABLE stats_pipeline_ends
    ADD PRIMARY KEY (hour, outcome),
    ADD CONSTRAINT stats_pipeline_ends_pipelines_check CHECK (pipelines >= 0);
ALTER TABLE stats_activation_days
    ADD PRIMARY KEY (day, plan, bin),
    ADD CONSTRAINT stats_activation_days_activations_check CHECK (activations >= 0);
DROP TABLE failures, ends, days;
DROP FUNCTION stats_shard();

-- A rollup of the event log for GetProvisioningStats, kept by triggers on
-- `events` in the statement that writes or deletes the events, so it
-- commits or rolls back with them and always holds what the log holds.
-- A window then reads whole buckets here and only the part of the bucket
-- at its start from the events (src/db/stats/).
--
-- Buckets are UTC hours (days for the time-to-ACTIVE histogram), aligned
-- by date_bin, so that they do not depend on the session's time zone.
-- Counters may reach 0 when events are pruned; readers skip zero rows.
--
-- Writers that count something update the counter rows of the current
-- bucket and hold those row locks until they commit, so concurrent writers
-- of one counter (the same step failing in many workers at once) commit
-- one after another. The trigger takes the locks in one order (step
-- failures, pipeline ends, activation days; keys in order within each),
-- and a transaction that counts events in several statements writes them
-- in that order too (a failure before the end it leads to), so writers
-- wait for one another but do not deadlock. Statements that count nothing
-- (most of them: claims, completed steps) pay one pass over their rows.

CREATE FUNCTION stats_hour(t TIMESTAMPTZ) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN date_bin('1 hour', t, TIMESTAMPTZ '2000-01-01 00:00:00+00');

CREATE FUNCTION stats_day(t TIMESTAMPTZ) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN date_bin('1 day', t, TIMESTAMPTZ '2000-01-01 00:00:00+00');

-- The state of the tenant's event before event `id`: which pipeline a
-- NEEDS_ATTENTION ended (PROVISIONING or DEPROVISIONING).
CREATE FUNCTION stats_state_before(tenant UUID, id BIGINT) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT p.state FROM events p
    WHERE p.tenant_id = tenant AND p.id < stats_state_before.id
    ORDER BY p.id DESC LIMIT 1
$$;

-- Failed attempts per hour and step (STEP_RETRYING, STEP_FAILED and
-- STEP_WARNING events; `given_up` without STEP_RETRYING). A NULL step
-- counts as ''.
CREATE TABLE stats_step_failures (
    hour            TIMESTAMPTZ NOT NULL,
    step            TEXT NOT NULL,
    failed_attempts BIGINT NOT NULL CHECK (failed_attempts >= 0),
    given_up        BIGINT NOT NULL CHECK (given_up BETWEEN 0 AND failed_attempts),
    PRIMARY KEY (hour, step)
);

-- Provisioning pipelines that ended, per hour and outcome: the dispatcher's
-- STATE_CHANGED events (those with an attempt) to one of four states, a
-- NEEDS_ATTENTION only if the tenant's previous event was PROVISIONING.
CREATE TABLE stats_pipeline_ends (
    hour      TIMESTAMPTZ NOT NULL,
    outcome   TEXT NOT NULL CHECK (outcome IN ('ACTIVE', 'FAILED', 'CANCELLED', 'NEEDS_ATTENTION')),
    pipelines BIGINT NOT NULL CHECK (pipelines >= 0),
    PRIMARY KEY (hour, outcome)
);

-- Percentiles do not add up across buckets, so time to ACTIVE keeps every
-- value: one row per ACTIVE pipeline end, with the tenant's plan and the
-- interval from the tenant's creation exactly as the event log gives it.
-- Readers count a window's values per plan and bin from
-- `stats_activation_days`, which tells them the bin that holds each rank a
-- percentile needs; then they read that bin's values alone, through
-- `stats_activations_bin_idx`.
CREATE TABLE stats_activations (
    event_id       BIGINT PRIMARY KEY,
    plan           TEXT NOT NULL,
    bin            INTEGER NOT NULL,
    time_to_active INTERVAL NOT NULL,
    create_time    TIMESTAMPTZ NOT NULL
);
CREATE INDEX stats_activations_bin_idx ON stats_activations (plan, bin, create_time)
    INCLUDE (time_to_active);
-- The part of a day at a window's start.
CREATE INDEX stats_activations_time_idx ON stats_activations (create_time) INCLUDE (plan, bin);

CREATE TABLE stats_activation_days (
    day         TIMESTAMPTZ NOT NULL,
    plan        TEXT NOT NULL,
    bin         INTEGER NOT NULL,
    activations BIGINT NOT NULL CHECK (activations >= 0),
    PRIMARY KEY (day, plan, bin)
);

-- The lower bounds of the bins of time to ACTIVE: 1 s, then each 5% above
-- the last, up to about 490 days (bin 0 is below 1 s). A bin holds a small
-- share of a window's values unless they all lie within 5% of each other,
-- and a day of one plan fills a few dozen bins. The bins are stored:
-- changing them means rebuilding both tables.
CREATE FUNCTION stats_activation_bounds() RETURNS INTERVAL[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(make_interval(secs => round(1.05 ^ k, 6)::float8) ORDER BY k)
    FROM generate_series(0, 360) k
$$;

-- Inlined into the caller, where the bounds fold into a constant.
CREATE FUNCTION stats_activation_bin(d INTERVAL) RETURNS INTEGER
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN width_bucket(d, stats_activation_bounds());

CREATE FUNCTION stats_rollup_add() RETURNS trigger LANGUAGE plpgsql AS $$
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

-- Deleting events (the prune job, a cascade from a deleted tenant) takes
-- their counts back out. One subtlety: whether a NEEDS_ATTENTION counts
-- depends on the event before it, so deleting that event can change how a
-- remaining NEEDS_ATTENTION counts; those are recounted, per tenant that
-- has one.
CREATE FUNCTION stats_rollup_remove() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE FUNCTION stats_rollup_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE stats_step_failures, stats_pipeline_ends, stats_activations, stats_activation_days;
    RETURN NULL;
END
$$;

-- The rollup reads events' kinds, states and times and tenants' plans and
-- creation times as they were written. The log is append-only and a
-- tenant keeps its plan (a new plan version is a new row of plan_versions),
-- so changing those columns is refused rather than silently leaving the
-- rollup behind.
CREATE FUNCTION stats_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the % of % cannot change: GetProvisioningStats keeps a rollup of them',
        TG_ARGV[0], TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

-- Creating the first trigger locks `events` against writers until this
-- migration commits (and waits for those already writing), so the backfill
-- below sees every event that the triggers will not.
CREATE TRIGGER events_stats_rollup_add AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION stats_rollup_add();
CREATE TRIGGER events_stats_rollup_remove AFTER DELETE ON events
    REFERENCING OLD TABLE AS old_events
    FOR EACH STATEMENT EXECUTE FUNCTION stats_rollup_remove();
CREATE TRIGGER events_stats_rollup_clear AFTER TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION stats_rollup_clear();
CREATE TRIGGER events_stats_append_only BEFORE UPDATE OF id, tenant_id, kind, step, attempt, state, create_time
    ON events FOR EACH STATEMENT EXECUTE FUNCTION stats_refuse_rewrite('id, tenant_id, kind, step, attempt, state or create_time');
CREATE TRIGGER tenants_stats_fixed BEFORE UPDATE OF plan, create_time ON tenants
    FOR EACH ROW WHEN (OLD.plan IS DISTINCT FROM NEW.plan OR OLD.create_time IS DISTINCT FROM NEW.create_time)
    EXECUTE FUNCTION stats_refuse_rewrite('plan or create_time');

-- The backfill of an existing log.
INSERT INTO stats_step_failures (hour, step, failed_attempts, given_up)
SELECT stats_hour(e.create_time), coalesce(e.step, ''), count(*),
       count(*) FILTER (WHERE e.kind <> 'STEP_RETRYING')
FROM events e
WHERE e.kind IN ('STEP_RETRYING', 'STEP_FAILED', 'STEP_WARNING')
GROUP BY 1, 2;

INSERT INTO stats_pipeline_ends (hour, outcome, pipelines)
SELECT stats_hour(e.create_time), e.state, count(*)
FROM events e
WHERE e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL
  AND e.state IN ('ACTIVE', 'FAILED', 'CANCELLED', 'NEEDS_ATTENTION')
  AND (e.state <> 'NEEDS_ATTENTION' OR stats_state_before(e.tenant_id, e.id) = 'PROVISIONING')
GROUP BY 1, 2;

INSERT INTO stats_activations (event_id, plan, bin, time_to_active, create_time)
SELECT e.id, t.plan, stats_activation_bin(x.d), x.d, e.create_time
FROM events e
JOIN tenants t ON t.id = e.tenant_id
CROSS JOIN LATERAL (SELECT e.create_time - t.create_time AS d) x
WHERE e.kind = 'STATE_CHANGED' AND e.attempt IS NOT NULL AND e.state = 'ACTIVE';

INSERT INTO stats_activation_days (day, plan, bin, activations)
SELECT stats_day(create_time), plan, bin, count(*)
FROM stats_activations
GROUP BY 1, 2, 3;

-- Usage metering. Events are stored once per (tenant, meter, id): the
-- primary key is the idempotency mark, taken in the transaction that stores
-- the event. Queries read quarter-hour rollups, kept current by the same
-- statement that stores the events: every IANA time zone's offset is a
-- whole number of quarter hours, so hours, days and months of any zone are
-- unions of whole quarter hours. Raw events stay for corrections.

CREATE TABLE meters (
    name        TEXT PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{1,62}$'),
    description TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    aggregation TEXT NOT NULL
        CHECK (aggregation IN ('SUM', 'COUNT', 'MAX', 'LATEST', 'UNIQUE_COUNT')),
    unit        TEXT NOT NULL DEFAULT '' CHECK (length(unit) <= 32),
    builtin     BOOLEAN NOT NULL DEFAULT false,
    create_time TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO meters (name, description, aggregation, unit, builtin) VALUES
    ('api_calls', 'Calls to the product''s API', 'SUM', 'calls', true),
    ('transactions', 'Business transactions', 'SUM', 'transactions', true),
    ('storage_bytes', 'Size of the tenant''s schema, sampled', 'LATEST', 'bytes', true),
    ('users', 'Rows of the tenant''s users table, sampled', 'LATEST', 'users', true);

CREATE TABLE usage_events (
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    meter       TEXT NOT NULL REFERENCES meters (name) ON DELETE CASCADE,
    id          TEXT NOT NULL CHECK (length(id) BETWEEN 1 AND 128),
    value       DOUBLE PRECISION NOT NULL CHECK (value >= 0 AND value < 'Infinity'),
    time        TIMESTAMPTZ NOT NULL,
    subject     TEXT NOT NULL DEFAULT '' CHECK (length(subject) <= 256),
    record_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set by CancelUsage: the event no longer counts anywhere.
    cancel_time TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, meter, id)
);
-- Recounting a quarter hour after a cancellation reads its events.
CREATE INDEX usage_events_time_idx ON usage_events (tenant_id, meter, time);

-- One row per tenant, meter and quarter hour that saw an event: enough for
-- every aggregation but UNIQUE_COUNT.
CREATE TABLE usage_rollups (
    tenant_id    UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    meter        TEXT NOT NULL REFERENCES meters (name) ON DELETE CASCADE,
    bucket       TIMESTAMPTZ NOT NULL,
    events       BIGINT NOT NULL,
    total        DOUBLE PRECISION NOT NULL,
    max          DOUBLE PRECISION NOT NULL,
    -- The latest event by time (then by id), for LATEST.
    latest_time  TIMESTAMPTZ NOT NULL,
    latest_id    TEXT NOT NULL,
    latest_value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, meter, bucket)
);

-- UNIQUE_COUNT: the distinct subjects of each quarter hour, with how many
-- events named them.
CREATE TABLE usage_subjects (
    tenant_id UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    meter     TEXT NOT NULL REFERENCES meters (name) ON DELETE CASCADE,
    bucket    TIMESTAMPTZ NOT NULL,
    subject   TEXT NOT NULL,
    events    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, meter, bucket, subject)
);

-- The quarter hour holding `t`.
CREATE FUNCTION usage_bucket(t TIMESTAMPTZ) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN date_bin('15 minutes', t, TIMESTAMPTZ '2000-01-01 00:00:00+00');

-- The control plane's schema: plans, tenants, their steps, the event log and
-- the outbox of due work. The CHECK constraints mirror src/domain so that a
-- bug in the application cannot store a state the domain does not know.

CREATE TABLE plans (
    name        TEXT PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{1,39}$'),
    version     INTEGER NOT NULL DEFAULT 1 CHECK (version > 0),
    description TEXT NOT NULL DEFAULT '',
    -- [{"name": "create_schema", "critical": true, "max_attempts": 5}, ...]
    steps       JSONB NOT NULL CHECK (jsonb_typeof(steps) = 'array' AND jsonb_array_length(steps) > 0),
    create_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    update_time TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO plans (name, description, steps) VALUES (
    'default',
    'Schema, migrations, roles and admin, welcome email.',
    '[{"name": "create_schema",        "critical": true,  "max_attempts": 5},
      {"name": "run_migrations",       "critical": true,  "max_attempts": 5},
      {"name": "seed_roles_and_admin", "critical": true,  "max_attempts": 5},
      {"name": "send_welcome_email",   "critical": false, "max_attempts": 5},
      {"name": "activate",             "critical": true,  "max_attempts": 5}]'
);

CREATE TABLE tenants (
    id                  UUID PRIMARY KEY,
    slug                TEXT NOT NULL CHECK (slug ~ '^[a-z][a-z0-9-]{2,39}$'),
    display_name        TEXT NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    admin_email         TEXT NOT NULL CHECK (char_length(admin_email) BETWEEN 3 AND 254),
    plan                TEXT NOT NULL REFERENCES plans (name),
    plan_version        INTEGER NOT NULL,
    labels              JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    state               TEXT NOT NULL CHECK (state IN (
                            'PROVISIONING', 'ACTIVE', 'SUSPENDED', 'FAILED', 'CANCELLED',
                            'DEPROVISIONING', 'DEPROVISIONED', 'NEEDS_ATTENTION')),
    state_reason        TEXT NOT NULL DEFAULT '',
    cancel_requested    BOOLEAN NOT NULL DEFAULT false,
    outputs             JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(outputs) = 'object'),
    leftover_resources  TEXT[] NOT NULL DEFAULT '{}',
    -- AIP-155 idempotency key and a digest of the request it created.
    request_id          TEXT UNIQUE,
    request_digest      TEXT,
    -- Bumped on every change; the etag is derived from it.
    revision            BIGINT NOT NULL DEFAULT 1,
    create_time         TIMESTAMPTZ NOT NULL DEFAULT now(),
    update_time         TIMESTAMPTZ NOT NULL DEFAULT now(),
    delete_time         TIMESTAMPTZ,
    purge_time          TIMESTAMPTZ,
    CHECK ((request_id IS NULL) = (request_digest IS NULL))
);

-- A slug names a schema and a role, so it stays taken until the tenant is
-- deleted or its schema is archived away by deprovisioning.
CREATE UNIQUE INDEX tenants_live_slug_key ON tenants (slug)
    WHERE delete_time IS NULL AND state <> 'DEPROVISIONED';
-- Keyset pagination in id order (UUIDv7: creation order) under each filter.
CREATE INDEX tenants_state_id_idx ON tenants (state, id) WHERE delete_time IS NULL;
CREATE INDEX tenants_plan_id_idx ON tenants (plan, id) WHERE delete_time IS NULL;
CREATE INDEX tenants_labels_idx ON tenants USING GIN (labels jsonb_path_ops);

CREATE TABLE tenant_steps (
    tenant_id     UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    position      INTEGER NOT NULL CHECK (position >= 0),
    name          TEXT NOT NULL,
    critical      BOOLEAN NOT NULL,
    max_attempts  INTEGER NOT NULL CHECK (max_attempts > 0),
    status        TEXT NOT NULL CHECK (status IN (
                      'PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'SKIPPED',
                      'COMPENSATING', 'COMPENSATED', 'CANCELLED')),
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error    TEXT,
    output        JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(output) = 'object'),
    start_time    TIMESTAMPTZ,
    finish_time   TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, position),
    UNIQUE (tenant_id, name)
);

-- Append-only. Every writer locks the tenant row before inserting, so one
-- tenant's events commit in id order and a reader never skips one.
CREATE TABLE events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    step         TEXT,
    attempt      INTEGER,
    state        TEXT NOT NULL,
    message      TEXT NOT NULL DEFAULT '',
    actor        TEXT NOT NULL,
    create_time  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX events_tenant_id_idx ON events (tenant_id, id);

-- Due work. At most one row per tenant: a tenant's steps run strictly in
-- order, and a second lifecycle operation cannot slip in beside a running one.
CREATE TABLE outbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     UUID NOT NULL UNIQUE REFERENCES tenants (id) ON DELETE CASCADE,
    operation     TEXT NOT NULL CHECK (operation IN ('PROVISION', 'COMPENSATE', 'DEPROVISION')),
    step          TEXT NOT NULL,
    attempt       INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    available_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_owner   TEXT,
    locked_until  TIMESTAMPTZ,
    last_error    TEXT,
    create_time   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((lease_owner IS NULL) = (locked_until IS NULL))
);
CREATE INDEX outbox_due_idx ON outbox (available_at) WHERE lease_owner IS NULL;
CREATE INDEX outbox_lease_idx ON outbox (locked_until) WHERE lease_owner IS NOT NULL;

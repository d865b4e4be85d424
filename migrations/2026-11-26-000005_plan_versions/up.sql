-- Versioned plans. `plans` holds each plan's current version; every version
-- ever made is kept in `plan_versions`, written by a trigger whenever a plan
-- is created or its version changes, and each tenant points at the version it
-- was created with. A plan's steps are also copied into `tenant_steps` at
-- creation, so changing a plan never changes a pipeline in flight.

ALTER TABLE plans
    -- Which set of tenant migrations `run_migrations` applies.
    ADD COLUMN migration_set TEXT NOT NULL DEFAULT 'core',
    -- {"extra_roles": ["auditor"], "config": {"general.locale": "en"}}
    ADD COLUMN initial_data JSONB NOT NULL DEFAULT '{"extra_roles": [], "config": {}}'
        CHECK (jsonb_typeof(initial_data) = 'object'),
    -- {"max_users": 10, "max_api_calls_per_day": 10000, "max_storage_mb": 1024}; absent = no limit
    ADD COLUMN limits JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(limits) = 'object'),
    ADD COLUMN built_in BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN delete_time TIMESTAMPTZ;

CREATE TABLE plan_versions (
    name          TEXT NOT NULL REFERENCES plans (name),
    version       INTEGER NOT NULL CHECK (version > 0),
    description   TEXT NOT NULL,
    steps         JSONB NOT NULL,
    migration_set TEXT NOT NULL,
    initial_data  JSONB NOT NULL,
    limits        JSONB NOT NULL,
    create_time   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE FUNCTION plans_record_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO plan_versions (name, version, description, steps, migration_set, initial_data, limits)
    VALUES (NEW.name, NEW.version, NEW.description, NEW.steps, NEW.migration_set, NEW.initial_data, NEW.limits)
    ON CONFLICT (name, version) DO NOTHING;
    RETURN NEW;
END $$;

CREATE TRIGGER plans_record_version_on_insert AFTER INSERT ON plans
    FOR EACH ROW EXECUTE FUNCTION plans_record_version();
CREATE TRIGGER plans_record_version_on_update AFTER UPDATE ON plans
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION plans_record_version();

INSERT INTO plan_versions (name, version, description, steps, migration_set, initial_data, limits)
SELECT name, version, description, steps, migration_set, initial_data, limits FROM plans;

ALTER TABLE tenants ADD CONSTRAINT tenants_plan_version_fkey
    FOREIGN KEY (plan, plan_version) REFERENCES plan_versions (name, version);

-- A tenant's steps keep the plan's per-step settings; NULL = the server's.
ALTER TABLE tenant_steps
    ADD COLUMN retry_base_ms INTEGER CHECK (retry_base_ms > 0),
    ADD COLUMN retry_cap_ms  INTEGER CHECK (retry_cap_ms > 0),
    ADD COLUMN timeout_ms    INTEGER CHECK (timeout_ms > 0);

UPDATE plans SET built_in = true WHERE name = 'default';

-- Three built-in plans besides `default`.
INSERT INTO plans (name, description, steps, initial_data, limits, built_in) VALUES
(
    'basic',
    'Small teams: quick retries, up to 10 users.',
    '[{"name": "create_schema",        "critical": true,  "max_attempts": 3},
      {"name": "run_migrations",       "critical": true,  "max_attempts": 3},
      {"name": "seed_roles_and_admin", "critical": true,  "max_attempts": 3},
      {"name": "send_welcome_email",   "critical": false, "max_attempts": 3, "retry_base_ms": 2000},
      {"name": "activate",             "critical": true,  "max_attempts": 3}]',
    '{"extra_roles": [], "config": {"general.locale": "en", "auth.session_ttl_minutes": "60",
      "features.audit_log": "false"}}',
    '{"max_users": 10, "max_api_calls_per_day": 10000, "max_storage_mb": 1024}',
    true
),
(
    'team',
    'Growing teams: an auditor role, up to 100 users.',
    '[{"name": "create_schema",        "critical": true,  "max_attempts": 5},
      {"name": "run_migrations",       "critical": true,  "max_attempts": 5},
      {"name": "seed_roles_and_admin", "critical": true,  "max_attempts": 5},
      {"name": "send_welcome_email",   "critical": false, "max_attempts": 5},
      {"name": "activate",             "critical": true,  "max_attempts": 5}]',
    '{"extra_roles": ["auditor"], "config": {"general.locale": "en", "auth.session_ttl_minutes": "240",
      "features.audit_log": "true"}}',
    '{"max_users": 100, "max_api_calls_per_day": 100000, "max_storage_mb": 10240}',
    true
),
(
    'enterprise',
    'Large organisations: patient retries, MFA on, up to 10000 users.',
    '[{"name": "create_schema",        "critical": true,  "max_attempts": 10, "retry_cap_ms": 600000},
      {"name": "run_migrations",       "critical": true,  "max_attempts": 10, "retry_cap_ms": 600000,
       "timeout_ms": 900000},
      {"name": "seed_roles_and_admin", "critical": true,  "max_attempts": 10},
      {"name": "send_welcome_email",   "critical": true,  "max_attempts": 10},
      {"name": "activate",             "critical": true,  "max_attempts": 10}]',
    '{"extra_roles": ["auditor", "billing"], "config": {"general.locale": "en",
      "auth.session_ttl_minutes": "480", "auth.mfa_required": "true", "features.audit_log": "true"}}',
    '{"max_users": 10000, "max_api_calls_per_day": 10000000, "max_storage_mb": 1048576}',
    true
);

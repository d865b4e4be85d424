-- Per-tenant configuration. Only the values a tenant set itself are stored;
-- every other setting shows its default from the tenant's plan version
-- (`plan_versions.initial_data -> 'config'`), read when the configuration
-- is. Which keys exist, their types and their rules are in
-- src/ops/config.rs; the CHECKs mirror what it stores.
CREATE TABLE tenant_config (
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- `category.name`, e.g. `auth.session_ttl_minutes`.
    key         TEXT NOT NULL CHECK (
                    key ~ '^(general|auth|billing|features|integrations)\.[a-z][a-z0-9_]{0,62}$'),
    -- A JSON string, integer or boolean, as the setting's type says.
    value       JSONB NOT NULL CHECK (jsonb_typeof(value) IN ('string', 'number', 'boolean')),
    update_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Who set it (the caller's subject), as on events.
    actor       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

ALTER TABLE tenants
    -- Bumped by every configuration change; the configuration's etag is
    -- derived from it. Apart from `revision`, so that changing settings
    -- does not invalidate an etag of the tenant record, and back.
    ADD COLUMN config_revision BIGINT NOT NULL DEFAULT 0 CHECK (config_revision >= 0),
    -- When a setting last changed; NULL until one does.
    ADD COLUMN config_update_time TIMESTAMPTZ;

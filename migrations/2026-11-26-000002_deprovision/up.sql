-- Deprovisioning: how a tenant is torn down, and which pipeline a step
-- belongs to.
ALTER TABLE tenants
    ADD COLUMN deprovision_mode TEXT CHECK (deprovision_mode IN ('ARCHIVE', 'PURGE')),
    ADD COLUMN grace_period_secs BIGINT CHECK (grace_period_secs >= 0);

ALTER TABLE tenant_steps
    ADD COLUMN phase TEXT NOT NULL DEFAULT 'PROVISION' CHECK (phase IN ('PROVISION', 'DEPROVISION'));

-- The purge job looks for deprovisioned tenants whose grace period ended.
CREATE INDEX tenants_purge_idx ON tenants (purge_time) WHERE state = 'DEPROVISIONED';
-- The reaper looks for pipelines without progress.
CREATE INDEX tenants_provisioning_idx ON tenants (update_time) WHERE state = 'PROVISIONING';

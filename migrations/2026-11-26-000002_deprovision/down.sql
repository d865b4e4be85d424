DROP INDEX tenants_provisioning_idx;
DROP INDEX tenants_purge_idx;
ALTER TABLE tenant_steps DROP COLUMN phase;
ALTER TABLE tenants DROP COLUMN grace_period_secs, DROP COLUMN deprovision_mode;

ALTER TABLE tenant_steps DROP COLUMN retry_base_ms, DROP COLUMN retry_cap_ms, DROP COLUMN timeout_ms;
ALTER TABLE tenants DROP CONSTRAINT tenants_plan_version_fkey;
DROP TRIGGER plans_record_version_on_update ON plans;
DROP TRIGGER plans_record_version_on_insert ON plans;
DROP FUNCTION plans_record_version();
DROP TABLE plan_versions;
DELETE FROM plans WHERE name IN ('basic', 'team', 'enterprise')
    AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.plan = plans.name);
ALTER TABLE plans DROP COLUMN migration_set, DROP COLUMN initial_data, DROP COLUMN limits,
    DROP COLUMN built_in, DROP COLUMN delete_time;

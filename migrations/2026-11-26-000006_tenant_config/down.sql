ALTER TABLE tenants DROP COLUMN config_revision, DROP COLUMN config_update_time;
DROP TABLE tenant_config;

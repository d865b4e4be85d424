DROP TRIGGER tenants_count_changed ON tenants;
DROP TRIGGER tenants_count_deleted ON tenants;
DROP TRIGGER tenants_count_inserted ON tenants;
DROP FUNCTION count_server_tenants();
DROP TABLE server_tenants;
ALTER TABLE database_servers DROP COLUMN last_error;
ALTER TABLE database_servers DROP COLUMN unreachable_since;
ALTER TABLE database_servers DROP COLUMN check_time;
ALTER TABLE tenants DROP COLUMN placement;

ALTER TABLE tenants DROP COLUMN database_server;
DROP TABLE database_servers;

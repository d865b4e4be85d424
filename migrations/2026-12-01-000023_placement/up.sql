-- Where a tenant asked to be placed (a label selector), as it asked.
ALTER TABLE tenants ADD COLUMN placement TEXT NOT NULL DEFAULT '';

-- When each server was last checked, and since when it has not answered.
ALTER TABLE database_servers ADD COLUMN check_time TIMESTAMPTZ;
ALTER TABLE database_servers ADD COLUMN unreachable_since TIMESTAMPTZ;
ALTER TABLE database_servers ADD COLUMN last_error TEXT NOT NULL DEFAULT '';

-- Live tenants per server, kept by trigger, split into shards by database
-- session so that concurrent CreateTenant calls do not queue on one row;
-- readers add the shards up. Placement reads these instead of counting
-- the tenants table on every call.
CREATE TABLE server_tenants (
    server  TEXT NOT NULL REFERENCES database_servers (name) ON DELETE CASCADE,
    shard   INTEGER NOT NULL,
    tenants BIGINT NOT NULL,
    PRIMARY KEY (server, shard)
) WITH (fillfactor = 50);

CREATE FUNCTION count_server_tenants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.delete_time IS NULL THEN
        INSERT INTO server_tenants (server, shard, tenants)
        VALUES (OLD.database_server, pg_backend_pid() % 8, -1)
        ON CONFLICT (server, shard) DO UPDATE SET tenants = server_tenants.tenants - 1;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.delete_time IS NULL THEN
        INSERT INTO server_tenants (server, shard, tenants)
        VALUES (NEW.database_server, pg_backend_pid() % 8, 1)
        ON CONFLICT (server, shard) DO UPDATE SET tenants = server_tenants.tenants + 1;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tenants_count_inserted AFTER INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION count_server_tenants();
CREATE TRIGGER tenants_count_deleted AFTER DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION count_server_tenants();
CREATE TRIGGER tenants_count_changed AFTER UPDATE OF database_server, delete_time ON tenants
    FOR EACH ROW
    WHEN (OLD.database_server IS DISTINCT FROM NEW.database_server
          OR (OLD.delete_time IS NULL) IS DISTINCT FROM (NEW.delete_time IS NULL))
    EXECUTE FUNCTION count_server_tenants();

INSERT INTO server_tenants (server, shard, tenants)
SELECT database_server, 0, count(*) FROM tenants WHERE delete_time IS NULL GROUP BY database_server;

-- The PostgreSQL servers that hold tenants' data. `default` is the tenant
-- database the server is configured with (its URL stays in that
-- configuration: `url` is empty); every existing tenant lives there.
CREATE TABLE database_servers (
    name        TEXT PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{1,39}$'),
    -- Without its password, which is sealed in `password`.
    url         TEXT NOT NULL,
    password    BYTEA,
    region      TEXT NOT NULL DEFAULT '',
    weight      INTEGER NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    max_tenants INTEGER NOT NULL DEFAULT 0 CHECK (max_tenants >= 0),
    draining    BOOLEAN NOT NULL DEFAULT false,
    labels      JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    reachable   BOOLEAN NOT NULL DEFAULT true,
    revision    BIGINT NOT NULL DEFAULT 1,
    create_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    update_time TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO database_servers (name, url) VALUES ('default', '');

ALTER TABLE tenants ADD COLUMN database_server TEXT NOT NULL DEFAULT 'default'
    REFERENCES database_servers (name);
CREATE INDEX tenants_database_server ON tenants (database_server) WHERE delete_time IS NULL;

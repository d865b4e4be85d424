-- Deprovisioning as a policy: a legal hold keeps a tenant's data from any
-- purge or deletion, and an archived tenant gets a verified export.
ALTER TABLE tenants
    ADD COLUMN legal_hold BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN legal_hold_reason TEXT NOT NULL DEFAULT '',
    ADD CONSTRAINT tenants_legal_hold_reason CHECK (NOT legal_hold OR legal_hold_reason <> '');

-- The export of an archived tenant's schema (pg_dump, custom format): the
-- file, its SHA-256, and the tables `pg_restore --list` showed in it,
-- checked against the schema's before the tenant counted as DEPROVISIONED.
CREATE TABLE tenant_exports (
    tenant_id   UUID PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    schema_name TEXT NOT NULL,
    path        TEXT NOT NULL,
    sha256      TEXT NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes       BIGINT NOT NULL CHECK (bytes > 0),
    tables      TEXT[] NOT NULL,
    verify_time TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What the reconciler found different from what a tenant's steps produced:
-- one row per resource, kept while the difference lasts.
CREATE TABLE tenant_drift (
    tenant_id UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    resource  TEXT NOT NULL,
    expected  TEXT NOT NULL,
    found     TEXT NOT NULL,
    since     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, resource)
);

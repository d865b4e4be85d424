-- A limit's thresholds (80 % and 100 %) reached by a tenant's meter in a
-- period: one row each, so that each is announced once per period.
CREATE TABLE usage_thresholds (
    tenant_id    UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    meter        TEXT NOT NULL REFERENCES meters (name) ON DELETE CASCADE,
    period_start TIMESTAMPTZ NOT NULL,
    threshold    SMALLINT NOT NULL CHECK (threshold BETWEEN 1 AND 100),
    value        DOUBLE PRECISION NOT NULL,
    lim          DOUBLE PRECISION NOT NULL,
    create_time  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, meter, period_start, threshold)
);

-- USAGE_THRESHOLD_REACHED events go out as `tenant.usage.threshold`.
CREATE OR REPLACE FUNCTION webhook_event_type(kind TEXT, state TEXT, step TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN kind = 'TENANT_CREATED' THEN 'tenant.created'
        WHEN kind = 'TENANT_UPDATED' THEN 'tenant.updated'
        WHEN kind IN ('STEP_FAILED', 'STEP_WARNING') THEN 'step.failed'
        WHEN kind = 'USAGE_THRESHOLD_REACHED' THEN 'tenant.usage.threshold'
        WHEN kind <> 'STATE_CHANGED' THEN NULL
        WHEN state = 'ACTIVE' AND step IS NOT NULL THEN 'tenant.active'
        WHEN state = 'ACTIVE' THEN 'tenant.resumed'
        WHEN state = 'SUSPENDED' THEN 'tenant.suspended'
        WHEN state = 'FAILED' THEN 'tenant.failed'
        WHEN state = 'CANCELLED' THEN 'tenant.cancelled'
        WHEN state = 'NEEDS_ATTENTION' THEN 'tenant.needs_attention'
        WHEN state = 'DEPROVISIONED' AND step IS NOT NULL THEN 'tenant.deprovisioned'
    END
$$;

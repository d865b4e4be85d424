CREATE OR REPLACE FUNCTION webhook_event_type(kind TEXT, state TEXT, step TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN kind = 'TENANT_CREATED' THEN 'tenant.created'
        WHEN kind = 'TENANT_UPDATED' THEN 'tenant.updated'
        WHEN kind IN ('STEP_FAILED', 'STEP_WARNING') THEN 'step.failed'
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
DELETE FROM events WHERE kind = 'USAGE_THRESHOLD_REACHED';
DROP TABLE usage_thresholds;

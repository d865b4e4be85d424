-- Webhook endpoints: the operator's HTTP services. The signing secret is
-- stored sealed under the key-encryption key (see src/secrets.rs), bound to
-- the row's id; after a rotation the previous secret keeps signing beside
-- the new one until `previous_secret_expire_time`.
CREATE TABLE webhook_endpoints (
    id                          UUID PRIMARY KEY,
    name                        TEXT NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9-]{1,39}$'),
    url                         TEXT NOT NULL,
    description                 TEXT NOT NULL DEFAULT '',
    event_types                 TEXT[] NOT NULL DEFAULT '{}',
    disabled                    BOOLEAN NOT NULL DEFAULT false,
    disabled_reason             TEXT NOT NULL DEFAULT '',
    secret_sealed               BYTEA NOT NULL,
    previous_secret_sealed      BYTEA,
    previous_secret_expire_time TIMESTAMPTZ,
    revision                    BIGINT NOT NULL DEFAULT 1,
    create_time                 TIMESTAMPTZ NOT NULL DEFAULT now(),
    update_time                 TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Deliveries are due work of their own, claimed like outbox rows (lease,
-- fencing token, attempt counted at claim time). `webhook_id` is the
-- Standard Webhooks message id, the same for every attempt; `payload` is
-- the body, fixed when the event commits, so every attempt sends the same
-- bytes.
CREATE TABLE webhook_deliveries (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id       TEXT NOT NULL UNIQUE,
    endpoint_id      UUID NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    tenant_id        UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    event_id         BIGINT NOT NULL,
    type             TEXT NOT NULL,
    payload          JSONB NOT NULL,
    status           TEXT NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempt          INTEGER NOT NULL DEFAULT 0,
    available_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_owner      TEXT,
    lease_token      BIGINT,
    locked_until     TIMESTAMPTZ,
    last_http_status INTEGER,
    last_error       TEXT,
    create_time      TIMESTAMPTZ NOT NULL DEFAULT now(),
    deliver_time     TIMESTAMPTZ
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (available_at) WHERE status = 'PENDING';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_tenant_idx ON webhook_deliveries (tenant_id, id);
ALTER TABLE webhook_deliveries SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- The subscription type of an event, or NULL for events nobody subscribes
-- to. Pipeline state changes name the step that ended the pipeline;
-- operator transitions (suspend, resume, the start of a deprovision) and
-- the purge name none, which tells `tenant.active` from `tenant.resumed`.
CREATE FUNCTION webhook_event_type(kind TEXT, state TEXT, step TEXT) RETURNS TEXT
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

-- One delivery per subscribed endpoint and matching event, written by the
-- statement that writes the events, so it commits or rolls back with them,
-- whichever code path (single inserts or the dispatcher's batched
-- statements) wrote them. With no subscribed endpoint it costs one probe.
CREATE FUNCTION webhook_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE event_types <> '{}' AND NOT disabled) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (webhook_id, endpoint_id, tenant_id, event_id, type, payload)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), ep.id, e.tenant_id, e.id, x.type,
           jsonb_build_object(
               'type', x.type,
               'timestamp', to_char(e.create_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object(
                   'tenant', jsonb_build_object(
                       'id', t.id, 'slug', t.slug, 'state', t.state, 'plan', t.plan,
                       'labels', t.labels, 'outputs', t.outputs),
                   'event', jsonb_build_object(
                       'id', e.id, 'kind', e.kind, 'step', e.step, 'message', e.message,
                       'actor', e.actor)))
    FROM new_events e
    CROSS JOIN LATERAL (SELECT webhook_event_type(e.kind, e.state, e.step) AS type) x
    JOIN tenants t ON t.id = e.tenant_id
    JOIN webhook_endpoints ep
      ON NOT ep.disabled AND (x.type = ANY (ep.event_types) OR '*' = ANY (ep.event_types))
    WHERE x.type IS NOT NULL
    ORDER BY e.id, ep.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER events_webhook_fan_out AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_fan_out();

-- Moves of tenants' data between database servers: the one in flight (at
-- most one per tenant) and the history, with what was verified.
CREATE TABLE tenant_moves (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    source      TEXT NOT NULL,
    target      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    -- Per table, as verified on both sides: {"rows": n, "checksum": "..."}.
    tables      JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tables) = 'object'),
    -- The source schema's size when it was copied.
    bytes       BIGINT,
    outcome     TEXT CHECK (outcome IN ('MOVED', 'ROLLED_BACK')),
    start_time  TIMESTAMPTZ NOT NULL DEFAULT now(),
    copy_time   TIMESTAMPTZ,
    switch_time TIMESTAMPTZ,
    finish_time TIMESTAMPTZ,
    CHECK ((outcome IS NULL) = (finish_time IS NULL))
);
CREATE UNIQUE INDEX tenant_moves_in_flight ON tenant_moves (tenant_id) WHERE finish_time IS NULL;
CREATE INDEX tenant_moves_by_server ON tenant_moves (source, target) WHERE finish_time IS NULL;

-- A move is an outbox operation of its own, with steps of its own phase.
ALTER TABLE outbox DROP CONSTRAINT outbox_operation_check,
    ADD CONSTRAINT outbox_operation_check
        CHECK (operation IN ('PROVISION', 'COMPENSATE', 'DEPROVISION', 'MOVE'));
ALTER TABLE tenant_steps DROP CONSTRAINT tenant_steps_phase_check,
    ADD CONSTRAINT tenant_steps_phase_check CHECK (phase IN ('PROVISION', 'DEPROVISION', 'MOVE'));

-- A deregistered server keeps its row (hidden), since the records of
-- deleted tenants name the server they lived on; registering the name
-- again takes the row back.
ALTER TABLE database_servers ADD COLUMN deregister_time TIMESTAMPTZ;

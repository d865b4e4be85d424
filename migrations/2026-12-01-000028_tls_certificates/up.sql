-- The ACME account of each certificate authority tenantd orders from:
-- created once (by whichever replica needs it first), its credentials (the
-- account key) sealed under the secrets key with the directory URL as
-- associated data.
CREATE TABLE acme_accounts (
    directory_url TEXT PRIMARY KEY,
    credentials   BYTEA NOT NULL,
    create_time   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Each tenant's certificate for its DNS name, and the order in progress
-- (the first one, or a renewal). The key of an order is sealed and stored
-- before the order is finalized, so a crash after finalizing never strands
-- a certificate whose key is lost. Keys are sealed with the tenant id and
-- "tls_key" as associated data.
CREATE TABLE tls_certificates (
    tenant_id       UUID PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    dns_name        TEXT NOT NULL,
    -- The order in progress, if any.
    order_url       TEXT,
    order_time      TIMESTAMPTZ,
    order_key       BYTEA,
    -- The certificate in force, if any.
    chain_pem       TEXT,
    private_key     BYTEA,
    serial          TEXT,
    not_before      TIMESTAMPTZ,
    not_after       TIMESTAMPTZ,
    issue_time      TIMESTAMPTZ,
    -- The key is handed out once (then forgotten); who took it, and when.
    key_fetch_time  TIMESTAMPTZ,
    key_fetched_by  TEXT,
    CHECK ((order_url IS NULL) = (order_time IS NULL)),
    CHECK (order_key IS NULL OR order_url IS NOT NULL),
    CHECK ((chain_pem IS NULL) = (serial IS NULL)),
    CHECK ((chain_pem IS NULL) = (not_after IS NULL))
);

-- The renewal job's question: which certificates end soonest.
CREATE INDEX tls_certificates_not_after ON tls_certificates (not_after) WHERE chain_pem IS NOT NULL;

-- A certificate's renewal is an outbox operation of its own, with a step
-- of its own phase.
ALTER TABLE outbox DROP CONSTRAINT outbox_operation_check,
    ADD CONSTRAINT outbox_operation_check
        CHECK (operation IN ('PROVISION', 'COMPENSATE', 'DEPROVISION', 'MOVE', 'RENEW'));
ALTER TABLE tenant_steps DROP CONSTRAINT tenant_steps_phase_check,
    ADD CONSTRAINT tenant_steps_phase_check
        CHECK (phase IN ('PROVISION', 'DEPROVISION', 'MOVE', 'RENEW'));

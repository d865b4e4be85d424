-- Soroban contract deployments, one per tenant, and the transactions sent
-- for them. The address is recorded before the first transaction is sent,
-- and every signed transaction is recorded (envelope and hash) before it is
-- sent, so a server that crashes after sending resumes the same transaction
-- instead of building a second one.

CREATE TABLE contract_deployments (
    tenant_id          UUID PRIMARY KEY,
    network_passphrase TEXT NOT NULL,
    deployer           TEXT NOT NULL,
    -- The strkey `C...`, a function of network, deployer and salt.
    contract_address   TEXT NOT NULL,
    wasm_hash          TEXT NOT NULL,
    -- reserved: address known, not (yet) seen on the ledger;
    -- deployed: its instance is on the ledger;
    -- orphaned: deployed, but the tenant's provisioning was undone (a
    --           contract cannot be deleted).
    status             TEXT NOT NULL CHECK (status IN ('reserved', 'deployed', 'orphaned')),
    create_time        TIMESTAMPTZ NOT NULL DEFAULT now(),
    update_time        TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE soroban_transactions (
    -- Hex of the network's transaction hash.
    hash         TEXT PRIMARY KEY,
    tenant_id    UUID NOT NULL,
    deployer     TEXT NOT NULL,
    purpose      TEXT NOT NULL CHECK (purpose IN ('upload_wasm', 'create_contract')),
    sequence     BIGINT NOT NULL,
    -- The transaction's upper time bound (unix seconds): after a ledger
    -- closed past it, a transaction not found will never be applied.
    max_time     BIGINT NOT NULL,
    -- Base64 of the signed TransactionEnvelope, re-sent byte for byte.
    envelope_xdr TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'expired')),
    ledger       INTEGER,
    error        TEXT,
    create_time  TIMESTAMPTZ NOT NULL DEFAULT now(),
    settle_time  TIMESTAMPTZ
);

-- One transaction in flight per deployer account: its sequence number
-- orders them, so a second one would be rejected or would invalidate the
-- first.
CREATE UNIQUE INDEX soroban_transactions_one_pending
    ON soroban_transactions (deployer) WHERE status = 'pending';
CREATE INDEX soroban_transactions_tenant ON soroban_transactions (tenant_id, create_time);

-- Built-in plans deploy the tenant's contract after seeding, before the
-- welcome email. Plans created by operators are theirs to change.
UPDATE plans SET
    steps = (
        SELECT jsonb_agg(step ORDER BY position)
        FROM (
            SELECT step, 2 * position AS position
            FROM jsonb_array_elements(plans.steps) WITH ORDINALITY AS s (step, position)
            UNION ALL
            SELECT jsonb_build_object('name', 'deploy_contract', 'critical', true,
                       'max_attempts', greatest(5, (seed.step ->> 'max_attempts')::int)),
                   2 * seed.position + 1
            FROM jsonb_array_elements(plans.steps) WITH ORDINALITY AS seed (step, position)
            WHERE seed.step ->> 'name' = 'seed_roles_and_admin'
        ) AS merged
    ),
    version = version + 1,
    update_time = now()
WHERE built_in
    AND delete_time IS NULL
    AND steps @> '[{"name": "seed_roles_and_admin"}]'
    AND NOT steps @> '[{"name": "deploy_contract"}]';

-- Tenants' API keys. Only a keyed hash of each key's secret is stored
-- (HMAC-SHA256 under a pepper derived from the secrets key). A key stops
-- working at `expire_time` or `revoke_time`, whichever comes first; a
-- rotation sets the old key's `revoke_time` to the end of its grace.
CREATE TABLE api_keys (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name            TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    prefix          TEXT NOT NULL,
    scopes          TEXT[] NOT NULL DEFAULT '{}',
    secret_hash     BYTEA NOT NULL CHECK (octet_length(secret_hash) = 32),
    create_time     TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by      TEXT NOT NULL,
    expire_time     TIMESTAMPTZ,
    last_used_time  TIMESTAMPTZ,
    revoke_time     TIMESTAMPTZ,
    -- The key a rotation made in this one's place.
    replaced_by     UUID REFERENCES api_keys (id) ON DELETE SET NULL,
    -- The key itself, sealed, until the welcome email has carried it (the
    -- key `issue_api_key` makes at provisioning); then NULL.
    delivery        BYTEA
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, create_time);

-- The built-in `default` plan issues the tenant's first API key after
-- seeding (not critical: a server without a secrets key says so and goes
-- on). Plans created by operators are theirs to change.
UPDATE plans SET
    steps = (
        SELECT jsonb_agg(step ORDER BY position)
        FROM (
            SELECT step, 2 * position AS position
            FROM jsonb_array_elements(plans.steps) WITH ORDINALITY AS s (step, position)
            UNION ALL
            SELECT jsonb_build_object('name', 'issue_api_key', 'critical', false,
                       'max_attempts', (seed.step ->> 'max_attempts')::int),
                   2 * seed.position + 1
            FROM jsonb_array_elements(plans.steps) WITH ORDINALITY AS seed (step, position)
            WHERE seed.step ->> 'name' = 'seed_roles_and_admin'
        ) AS merged
    ),
    version = version + 1,
    update_time = now()
WHERE name = 'default' AND built_in
    AND delete_time IS NULL
    AND steps @> '[{"name": "seed_roles_and_admin"}]'
    AND NOT steps @> '[{"name": "issue_api_key"}]';

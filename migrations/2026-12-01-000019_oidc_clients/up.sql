-- Each tenant's OpenID Connect client at the identity provider
-- (register_oidc_client). A row is written before the registration request
-- goes out (`intent_time`) and completed with the provider's answer in the
-- next statement; tokens and secrets are sealed under the secrets key, with
-- the tenant id and the column as associated data.
CREATE TABLE oidc_clients (
    tenant_id                 UUID PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    issuer                    TEXT NOT NULL,
    auth_method               TEXT NOT NULL
        CHECK (auth_method IN ('private_key_jwt', 'client_secret_basic', 'none')),
    intent_time               TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Registrations sent without an answer recorded (a crash, a timeout).
    unanswered                INTEGER NOT NULL DEFAULT 0,
    client_id                 TEXT,
    registration_client_uri   TEXT,
    registration_access_token BYTEA,
    -- With client_secret_basic, until an admin fetches it (once).
    client_secret             BYTEA,
    register_time             TIMESTAMPTZ,
    secret_fetch_time         TIMESTAMPTZ,
    secret_fetched_by         TEXT,
    CHECK ((client_id IS NULL) = (register_time IS NULL)),
    CHECK ((client_id IS NULL) = (registration_access_token IS NULL))
);

-- The `sso` plan: the default pipeline with the tenant's OpenID client
-- registered once its admin exists.
INSERT INTO plans (name, description, steps, initial_data, limits, built_in) VALUES (
    'sso',
    'Single sign-on: an OpenID Connect client at the identity provider for each tenant.',
    '[{"name": "create_schema",        "critical": true,  "max_attempts": 5},
      {"name": "run_migrations",       "critical": true,  "max_attempts": 5},
      {"name": "seed_roles_and_admin", "critical": true,  "max_attempts": 5},
      {"name": "register_oidc_client", "critical": true,  "max_attempts": 5},
      {"name": "deploy_contract",      "critical": true,  "max_attempts": 5},
      {"name": "send_welcome_email",   "critical": false, "max_attempts": 5},
      {"name": "activate",             "critical": true,  "max_attempts": 5}]',
    '{"extra_roles": [], "config": {}}',
    '{}',
    true
) ON CONFLICT (name) DO NOTHING;

-- The owner a tenant's Soroban contract records (its constructor's second
-- argument): a `G...` or `C...` address given at creation; empty for the
-- deployer.
ALTER TABLE tenants ADD COLUMN contract_owner TEXT NOT NULL DEFAULT '';

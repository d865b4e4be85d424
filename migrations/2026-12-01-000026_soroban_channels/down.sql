DROP INDEX soroban_transactions_source_sequence;
DROP INDEX soroban_transactions_one_upload;
DROP INDEX soroban_transactions_one_per_tenant;
DROP INDEX soroban_transactions_one_per_source;
CREATE UNIQUE INDEX soroban_transactions_one_pending
    ON soroban_transactions (deployer) WHERE status = 'pending';
DELETE FROM soroban_transactions WHERE tenant_id IS NULL OR purpose = 'fund_channels';
ALTER TABLE soroban_transactions DROP CONSTRAINT soroban_transactions_purpose_check;
ALTER TABLE soroban_transactions ADD CONSTRAINT soroban_transactions_purpose_check
    CHECK (purpose IN ('upload_wasm', 'create_contract'));
ALTER TABLE soroban_transactions ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE soroban_transactions DROP COLUMN send_time;
ALTER TABLE soroban_transactions DROP COLUMN source;

-- Channel accounts: a deployment's transactions may come from one of
-- several source accounts (channels), each with one transaction in flight,
-- while the deployer authorises every creation. `source` is the account
-- whose sequence number the transaction uses (the deployer itself when no
-- channels are configured).
ALTER TABLE soroban_transactions ADD COLUMN source TEXT;
UPDATE soroban_transactions SET source = deployer;
ALTER TABLE soroban_transactions ALTER COLUMN source SET NOT NULL;

-- When the transaction was last handed to the RPC server: a look that finds
-- it still unknown long after sends the same bytes again.
ALTER TABLE soroban_transactions ADD COLUMN send_time TIMESTAMPTZ;

-- Transactions that set up the deployment itself (creating and topping up
-- channels, paid by the deployer) are no tenant's.
ALTER TABLE soroban_transactions ALTER COLUMN tenant_id DROP NOT NULL;
ALTER TABLE soroban_transactions DROP CONSTRAINT soroban_transactions_purpose_check;
ALTER TABLE soroban_transactions ADD CONSTRAINT soroban_transactions_purpose_check
    CHECK (purpose IN ('upload_wasm', 'create_contract', 'fund_channels'));

-- One transaction in flight per source account: its sequence number orders
-- them, so a second one would be rejected or would invalidate the first.
DROP INDEX soroban_transactions_one_pending;
CREATE UNIQUE INDEX soroban_transactions_one_per_source
    ON soroban_transactions (source) WHERE status = 'pending';
-- One transaction in flight per tenant: its deployment is one step at a time.
CREATE UNIQUE INDEX soroban_transactions_one_per_tenant
    ON soroban_transactions (tenant_id) WHERE status = 'pending';
-- One upload of the code in flight per deployer: the others wait for it
-- rather than pay for the same code again.
CREATE UNIQUE INDEX soroban_transactions_one_upload
    ON soroban_transactions (deployer) WHERE status = 'pending' AND purpose = 'upload_wasm';
-- The sequence numbers a source has used, for the check that a new
-- transaction's number was not used since it was read.
CREATE INDEX soroban_transactions_source_sequence
    ON soroban_transactions (source, sequence);

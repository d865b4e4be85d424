ALTER TABLE tenants DROP COLUMN contract_owner;

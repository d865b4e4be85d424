DROP TABLE tenant_exports;
ALTER TABLE tenants DROP CONSTRAINT tenants_legal_hold_reason,
    DROP COLUMN legal_hold_reason, DROP COLUMN legal_hold;

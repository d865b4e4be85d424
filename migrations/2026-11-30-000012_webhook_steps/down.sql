ALTER TABLE tenant_steps
    DROP COLUMN webhook_endpoint,
    DROP COLUMN webhook_compensate;

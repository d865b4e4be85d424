DELETE FROM outbox WHERE operation = 'RENEW';
DELETE FROM tenant_steps WHERE phase = 'RENEW';
ALTER TABLE tenant_steps DROP CONSTRAINT tenant_steps_phase_check,
    ADD CONSTRAINT tenant_steps_phase_check CHECK (phase IN ('PROVISION', 'DEPROVISION', 'MOVE'));
ALTER TABLE outbox DROP CONSTRAINT outbox_operation_check,
    ADD CONSTRAINT outbox_operation_check
        CHECK (operation IN ('PROVISION', 'COMPENSATE', 'DEPROVISION', 'MOVE'));
DROP TABLE tls_certificates;
DROP TABLE acme_accounts;

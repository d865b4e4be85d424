DELETE FROM database_servers WHERE deregister_time IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.database_server = database_servers.name);
ALTER TABLE database_servers DROP COLUMN deregister_time;
DELETE FROM outbox WHERE operation = 'MOVE'
    OR (operation = 'COMPENSATE' AND step LIKE 'move\_%');
DELETE FROM tenant_steps WHERE phase = 'MOVE';
ALTER TABLE tenant_steps DROP CONSTRAINT tenant_steps_phase_check,
    ADD CONSTRAINT tenant_steps_phase_check CHECK (phase IN ('PROVISION', 'DEPROVISION'));
ALTER TABLE outbox DROP CONSTRAINT outbox_operation_check,
    ADD CONSTRAINT outbox_operation_check
        CHECK (operation IN ('PROVISION', 'COMPENSATE', 'DEPROVISION'));
DROP TABLE tenant_moves;

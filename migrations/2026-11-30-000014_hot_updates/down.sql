ALTER TABLE tenant_steps RESET (fillfactor);
ALTER TABLE outbox RESET (fillfactor);

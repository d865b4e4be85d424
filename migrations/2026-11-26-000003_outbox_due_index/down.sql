DROP INDEX outbox_available_at_idx;
CREATE INDEX outbox_due_idx ON outbox (available_at) WHERE lease_owner IS NULL;
CREATE INDEX outbox_lease_idx ON outbox (locked_until) WHERE lease_owner IS NOT NULL;

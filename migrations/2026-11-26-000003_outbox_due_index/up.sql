-- A claimed row's available_at is its lease expiry, so one index on
-- available_at finds due rows and expired leases alike (the claim and the
-- dispatcher's next-due query both use it); the partial indexes split on
-- lease_owner served neither.
DROP INDEX outbox_due_idx;
DROP INDEX outbox_lease_idx;
CREATE INDEX outbox_available_at_idx ON outbox (available_at);

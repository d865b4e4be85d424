-- The outbox is a queue: every attempt rewrites its row and every pipeline
-- deletes it, while the table itself stays small. Vacuum it after a fixed
-- number of dead rows, not after a fraction of its (tiny) size, and without
-- the cost-based pauses, so that claims keep scanning a compact table.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

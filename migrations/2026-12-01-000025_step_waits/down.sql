ALTER TABLE outbox DROP COLUMN waiting_since;

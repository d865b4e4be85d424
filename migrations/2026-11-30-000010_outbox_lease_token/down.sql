ALTER TABLE outbox DROP COLUMN lease_token;
DROP SEQUENCE outbox_lease_token_seq;

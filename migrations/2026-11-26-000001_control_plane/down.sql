DROP TABLE outbox;
DROP TABLE events;
DROP TABLE tenant_steps;
DROP TABLE tenants;
DROP TABLE plans;

-- A tenant step that calls a webhook endpoint instead of a built-in step:
-- the endpoint's name and whether the saga calls it to undo the step. Set
-- from the plan when the tenant is created, like the retry policy.
ALTER TABLE tenant_steps
    ADD COLUMN webhook_endpoint TEXT,
    ADD COLUMN webhook_compensate BOOLEAN NOT NULL DEFAULT false;

-- Usage limits on any meter, and what reaching one does to a tenant.
ALTER TABLE plans
    -- {"seats": {"limit": 50, "period": "MONTH"}}: limits on meters other
    -- than those the named limits bind.
    ADD COLUMN meter_limits JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(meter_limits) = 'object'),
    ADD COLUMN on_limit TEXT NOT NULL DEFAULT 'NOTIFY' CHECK (on_limit IN ('NOTIFY', 'SUSPEND'));
ALTER TABLE plan_versions
    ADD COLUMN meter_limits JSONB NOT NULL DEFAULT '{}',
    ADD COLUMN on_limit TEXT NOT NULL DEFAULT 'NOTIFY';

CREATE OR REPLACE FUNCTION plans_record_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO plan_versions (name, version, description, steps, migration_set, initial_data, limits,
                               meter_limits, on_limit)
    VALUES (NEW.name, NEW.version, NEW.description, NEW.steps, NEW.migration_set, NEW.initial_data,
            NEW.limits, NEW.meter_limits, NEW.on_limit)
    ON CONFLICT (name, version) DO NOTHING;
    RETURN NEW;
END $$;

-- Tenants the quota suspended (a plan with on_limit SUSPEND) and the meter
-- that did it. The server resumes them once they are below every limit;
-- any other suspension or resumption removes the row, so an operator's
-- decision is never undone by the quota.
CREATE TABLE quota_suspensions (
    tenant_id    UUID PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    meter        TEXT NOT NULL,
    period_start TIMESTAMPTZ NOT NULL,
    suspend_time TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A raised (or lowered) limit has thresholds of its own: reaching 80 % and
-- 100 % of the new limit is announced in the same period.
ALTER TABLE usage_thresholds DROP CONSTRAINT usage_thresholds_pkey,
    ADD PRIMARY KEY (tenant_id, meter, period_start, threshold, lim);

DELETE FROM usage_thresholds u USING usage_thresholds v
WHERE (u.tenant_id, u.meter, u.period_start, u.threshold) = (v.tenant_id, v.meter, v.period_start, v.threshold)
  AND u.create_time > v.create_time;
ALTER TABLE usage_thresholds DROP CONSTRAINT usage_thresholds_pkey,
    ADD PRIMARY KEY (tenant_id, meter, period_start, threshold);
DROP TABLE quota_suspensions;
CREATE OR REPLACE FUNCTION plans_record_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO plan_versions (name, version, description, steps, migration_set, initial_data, limits)
    VALUES (NEW.name, NEW.version, NEW.description, NEW.steps, NEW.migration_set, NEW.initial_data, NEW.limits)
    ON CONFLICT (name, version) DO NOTHING;
    RETURN NEW;
END $$;
ALTER TABLE plan_versions DROP COLUMN meter_limits, DROP COLUMN on_limit;
ALTER TABLE plans DROP COLUMN meter_limits, DROP COLUMN on_limit;

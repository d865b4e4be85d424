-- DeletePlan is refused while live tenants use the plan. A tenant created
-- concurrently with the deletion must not slip through: every tenant insert
-- takes a shared advisory lock on its plan, DeletePlan an exclusive one, and
-- the insert then checks the plan with a fresh snapshot (a VOLATILE function
-- takes one per query), so it sees a deletion that committed while it waited.
CREATE FUNCTION tenants_plan_is_live() RETURNS trigger LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('tenantd.plan:' || NEW.plan));
    IF EXISTS (SELECT 1 FROM plans WHERE name = NEW.plan AND delete_time IS NOT NULL) THEN
        RAISE EXCEPTION 'plan % was deleted', NEW.plan
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenants_plan_live';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tenants_plan_is_live BEFORE INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_plan_is_live();

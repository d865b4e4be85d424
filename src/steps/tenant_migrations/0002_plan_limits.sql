-- The limits of the tenant's plan, seeded by the control plane and enforced
-- here, next to the data, so that no path into the tenant's schema can pass
-- them. A limit that is absent is no limit.
CREATE TABLE plan_limits (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL CHECK (value > 0)
);

-- search_path is pinned to this schema, whatever the caller's is.
CREATE FUNCTION enforce_max_users() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    cap   BIGINT;
    users BIGINT;
BEGIN
    SELECT value INTO cap FROM plan_limits WHERE name = 'max_users';
    IF cap IS NOT NULL THEN
        -- One insert at a time, so that two cannot both see room for one.
        LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE;
        SELECT count(*) INTO users FROM users;
        IF users >= cap THEN
            RAISE EXCEPTION 'the plan allows at most % users', cap
                USING ERRCODE = 'check_violation', CONSTRAINT = 'max_users';
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER users_max_users BEFORE INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION enforce_max_users();

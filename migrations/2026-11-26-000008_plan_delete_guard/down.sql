DROP TRIGGER tenants_plan_is_live ON tenants;
DROP FUNCTION tenants_plan_is_live();

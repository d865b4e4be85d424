//! Taking a tenant role's access away and giving it back: the schema, its
//! tables and its functions change owner between the tenant's role and the
//! control plane's own role. Used by suspension and by deprovisioning.

use super::TenantNames;

/// SQL that moves the schema and its tables to the control plane's role
/// (`current_user`); the tenant role keeps nothing. A no-op without the schema.
pub fn revoke_sql(names: &TenantNames) -> String {
    owner_change_sql(&names.schema, "current_user")
}

/// SQL that gives the schema and its tables back to the tenant's role.
pub fn restore_sql(names: &TenantNames) -> String {
    owner_change_sql(&names.schema, &format!("'{}'", names.role))
}

/// `schema` is a validated identifier; `owner` an SQL expression.
fn owner_change_sql(schema: &str, owner: &str) -> String {
    format!(
        "DO $$ DECLARE r record; owner name := {owner}; BEGIN
             IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '{schema}') THEN
                 EXECUTE format('ALTER SCHEMA %I OWNER TO %I', '{schema}', owner);
                 FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' LOOP
                     EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', '{schema}', r.tablename, owner);
                 END LOOP;
                 FOR r IN SELECT p.oid::regprocedure AS f FROM pg_proc p
                          JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = '{schema}' LOOP
                     EXECUTE format('ALTER FUNCTION %s OWNER TO %I', r.f, owner);
                 END LOOP;
             END IF;
         END $$;"
    )
}

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

/// SQL that leaves the tenant's role reading, not writing: the schema and
/// its tables go to the control plane's role (as for a suspension), and the
/// tenant's role keeps USAGE and SELECT. A no-op without the schema.
pub fn read_only_sql(names: &TenantNames) -> String {
    let (schema, role) = (&names.schema, &names.role);
    format!(
        "{}
         DO $$ BEGIN
             IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '{schema}') THEN
                 EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', '{schema}', '{role}');
                 EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', '{schema}', '{role}');
                 EXECUTE format('GRANT SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', '{schema}', '{role}');
             END IF;
         END $$;",
        revoke_sql(names)
    )
}

/// SQL that undoes [`read_only_sql`]: the reading grants go, the schema
/// and its tables return to the tenant's role. Run again, it changes
/// nothing (the grants are revoked only while the role does not own the
/// schema: revoking an owner's privilege would take it from the owner).
pub fn writable_sql(names: &TenantNames) -> String {
    let (schema, role) = (&names.schema, &names.role);
    format!(
        "DO $$ BEGIN
             IF EXISTS (SELECT 1 FROM pg_namespace n JOIN pg_roles r ON r.oid <> n.nspowner
                        WHERE n.nspname = '{schema}' AND r.rolname = '{role}') THEN
                 EXECUTE format('REVOKE SELECT ON ALL SEQUENCES IN SCHEMA %I FROM %I', '{schema}', '{role}');
                 EXECUTE format('REVOKE SELECT ON ALL TABLES IN SCHEMA %I FROM %I', '{schema}', '{role}');
                 EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM %I', '{schema}', '{role}');
             END IF;
         END $$;
         {}",
        restore_sql(names)
    )
}

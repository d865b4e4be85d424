//! Postgres names derived from a tenant's slug. The slug is validated before
//! it is stored (`^[a-z][a-z0-9-]{2,39}$`); the names are checked again here
//! and always quoted, so no input ever reaches SQL unquoted.

/// Longest identifier Postgres keeps (NAMEDATALEN - 1).
const MAX_IDENTIFIER_LEN: usize = 63;

/// The schema and role of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNames {
    pub schema: String,
    pub role: String,
}

impl TenantNames {
    /// `tenant_<slug>` for the schema (per database) and `<role_prefix><slug>`
    /// for the role (roles are cluster-wide, so several control planes on one
    /// cluster use different prefixes). `-` becomes `_`, which slugs never
    /// contain, so the mapping is injective.
    pub fn derive(slug: &str, role_prefix: &str) -> Result<Self, String> {
        let valid_slug = (3..=40).contains(&slug.len())
            && slug.as_bytes()[0].is_ascii_lowercase()
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_slug {
            return Err(format!("slug {slug:?} cannot name a schema"));
        }
        let body = slug.replace('-', "_");
        let names = TenantNames {
            schema: format!("tenant_{body}"),
            role: format!("{role_prefix}{body}"),
        };
        for name in [&names.schema, &names.role] {
            if !is_identifier(name) {
                return Err(format!("{name:?} is not a valid identifier"));
            }
        }
        Ok(names)
    }

    /// The schema, quoted for SQL.
    pub fn schema_ident(&self) -> String {
        quote(&self.schema)
    }

    /// The role, quoted for SQL.
    pub fn role_ident(&self) -> String {
        quote(&self.role)
    }
}

/// Whether `prefix` can start a role name.
pub fn is_valid_role_prefix(prefix: &str) -> bool {
    (1..=20).contains(&prefix.len()) && is_identifier(prefix)
}

fn is_identifier(name: &str) -> bool {
    (1..=MAX_IDENTIFIER_LEN).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Double-quotes an identifier (doubling any quote, though validated names
/// have none).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_validated_and_quoted() {
        let n = TenantNames::derive("acme-corp", "tenant_").unwrap();
        assert_eq!(n.schema, "tenant_acme_corp");
        assert_eq!(n.role_ident(), "\"tenant_acme_corp\"");
        assert!(TenantNames::derive("x\"; DROP ROLE postgres; --", "tenant_").is_err());
        assert!(TenantNames::derive("Acme", "tenant_").is_err());
        assert!(TenantNames::derive(&"a".repeat(40), "tenant_").is_ok());
        assert!(!is_valid_role_prefix("Bad-Prefix"));
        assert!(is_valid_role_prefix("t1234_"));
    }
}

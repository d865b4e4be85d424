//! Validation of user input, done before any SQL. Every bound here is also a
//! defence: nothing unbounded reaches the database or a log line.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{DEFAULT_PLAN, TenantPatch};

/// Page size when the caller asks for 0 (AIP-158).
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Larger page sizes are coerced down to this (AIP-158), which bounds the
/// work of one ListTenants call.
pub const MAX_PAGE_SIZE: i64 = 1000;

const MAX_DISPLAY_NAME_CHARS: usize = 200;
/// RFC 5321 limits a forward path to 256 octets including the brackets.
const MAX_EMAIL_LEN: usize = 254;
const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY_LEN: usize = 63;
const MAX_LABEL_VALUE_LEN: usize = 63;
const MAX_PLAN_NAME_LEN: usize = 40;
const MAX_REQUEST_ID_LEN: usize = 64;

/// One offending field and why, reported as a google.rpc.BadRequest violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `tenant.slug`.
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// A tenant as a caller asked for it, not yet validated.
#[derive(Debug, Clone, Default)]
pub struct TenantInput {
    pub slug: String,
    pub display_name: String,
    pub admin_email: String,
    pub plan: String,
    pub labels: BTreeMap<String, String>,
    /// A label selector for its database server; empty: any.
    pub placement: String,
    /// The owner its Soroban contract records; empty: the deployer.
    pub contract_owner: String,
}

/// A validated tenant to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    pub slug: String,
    pub display_name: String,
    pub admin_email: String,
    pub plan: String,
    pub labels: BTreeMap<String, String>,
    pub placement: super::Placement,
    /// A `G...` account or `C...` contract strkey, or empty.
    pub contract_owner: String,
}

impl NewTenant {
    /// Checks every field and reports every violation at once.
    pub fn validate(input: TenantInput) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        check_slug("tenant.slug", &input.slug, &mut violations);
        check_display_name("tenant.display_name", &input.display_name, &mut violations);
        check_email("tenant.admin_email", &input.admin_email, &mut violations);
        check_labels("tenant.labels", &input.labels, &mut violations);
        let plan = if input.plan.is_empty() {
            DEFAULT_PLAN.to_owned()
        } else {
            input.plan
        };
        check_plan_name("tenant.plan", &plan, &mut violations);
        let placement = super::Placement::parse("tenant.placement", &input.placement)
            .map_err(|v| violations.extend(v))
            .unwrap_or_default();
        check_contract_owner(
            "tenant.contract_owner",
            &input.contract_owner,
            &mut violations,
        );
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(NewTenant {
            slug: input.slug,
            display_name: input.display_name,
            admin_email: input.admin_email,
            plan,
            labels: input.labels,
            placement,
            contract_owner: input.contract_owner,
        })
    }

    /// A digest of everything the caller chose, stored with the request_id so
    /// that a replay with different parameters is told apart from a retry.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            &self.slug,
            &self.display_name,
            &self.admin_email,
            &self.plan,
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        for (key, value) in &self.labels {
            hasher.update((key.len() as u64).to_be_bytes());
            hasher.update(key.as_bytes());
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        }
        // Only when set, so that digests recorded before placement existed
        // still match their retries.
        if !self.placement.is_empty() {
            let text = self.placement.to_string();
            hasher.update(b"placement");
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
        }
        if !self.contract_owner.is_empty() {
            hasher.update(b"contract_owner");
            hasher.update((self.contract_owner.len() as u64).to_be_bytes());
            hasher.update(self.contract_owner.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

/// Checks ListTenants' filters: a plan name and labels as they would be
/// stored, so that nothing unbounded reaches the query.
pub fn validate_list_filter(
    plan: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Result<(), Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if let Some(plan) = plan {
        check_plan_name("plan", plan, &mut violations);
    }
    check_labels("labels", labels, &mut violations);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// Checks the fields a patch sets.
pub fn validate_patch(patch: &TenantPatch) -> Result<(), Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if let Some(name) = &patch.display_name {
        check_display_name("tenant.display_name", name, &mut violations);
    }
    if let Some(email) = &patch.admin_email {
        check_email("tenant.admin_email", email, &mut violations);
    }
    if let Some(labels) = &patch.labels {
        check_labels("tenant.labels", labels, &mut violations);
    }
    if let Some((hold, reason)) = &patch.legal_hold {
        if *hold && reason.trim().is_empty() {
            violations.push(FieldViolation::new(
                "tenant.legal_hold_reason",
                "is required to set a legal hold",
            ));
        } else if reason.chars().count() > 1000 || reason.chars().any(char::is_control) {
            violations.push(FieldViolation::new(
                "tenant.legal_hold_reason",
                "must be at most 1000 characters without control characters",
            ));
        }
    }
    if let Some(etag) = &patch.expected_etag
        && etag.len() > 32
    {
        violations.push(FieldViolation::new(
            "tenant.etag",
            "is not an etag this server issued",
        ));
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// Parses a tenant id; `field` names it in the violation.
pub fn validate_tenant_id(field: &str, id: &str) -> Result<Uuid, FieldViolation> {
    if id.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    Uuid::try_parse(id).map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

/// An AIP-155 request id: optional, bounded, printable.
pub fn validate_request_id(id: &str) -> Result<Option<String>, FieldViolation> {
    if id.is_empty() {
        return Ok(None);
    }
    let ok = id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(Some(id.to_owned()))
    } else {
        Err(FieldViolation::new(
            "request_id",
            format!("must be 1 to {MAX_REQUEST_ID_LEN} characters of [A-Za-z0-9._:-]"),
        ))
    }
}

/// AIP-158: 0 means the default, larger than the maximum is coerced, negative
/// is an error.
pub fn validate_page_size(size: i32) -> Result<i64, FieldViolation> {
    match i64::from(size) {
        n if n < 0 => Err(FieldViolation::new("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

fn check_slug(field: &str, slug: &str, out: &mut Vec<FieldViolation>) {
    let bytes = slug.as_bytes();
    let ok = (3..=40).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if slug.is_empty() {
        out.push(FieldViolation::new(field, "is required"));
    } else if !ok {
        out.push(FieldViolation::new(
            field,
            "must match ^[a-z][a-z0-9-]{2,39}$ (3 to 40 lowercase letters, digits or '-', starting with a letter)",
        ));
    }
}

fn check_display_name(field: &str, name: &str, out: &mut Vec<FieldViolation>) {
    if name.trim().is_empty() {
        out.push(FieldViolation::new(field, "is required"));
    } else if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        out.push(FieldViolation::new(
            field,
            format!("must be at most {MAX_DISPLAY_NAME_CHARS} characters"),
        ));
    } else if name.chars().any(char::is_control) {
        out.push(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
}

/// Empty, or a Stellar account (`G...`) or contract (`C...`) address. The
/// text is not echoed: it could be a secret key pasted by mistake.
fn check_contract_owner(field: &str, owner: &str, out: &mut Vec<FieldViolation>) {
    if owner.is_empty()
        || owner.parse::<stellar_strkey::ed25519::PublicKey>().is_ok()
        || owner.parse::<stellar_strkey::Contract>().is_ok()
    {
        return;
    }
    out.push(FieldViolation::new(
        field,
        "must be a Stellar account (G...) or contract (C...) address",
    ));
}

fn check_email(field: &str, email: &str, out: &mut Vec<FieldViolation>) {
    if email.is_empty() {
        out.push(FieldViolation::new(field, "is required"));
    } else if email.len() > MAX_EMAIL_LEN {
        out.push(FieldViolation::new(
            field,
            format!("must be at most {MAX_EMAIL_LEN} bytes"),
        ));
    } else if let Err(error) = super::email::check_address(email) {
        out.push(FieldViolation::new(
            field,
            format!("must be an email address like admin@example.com: {error}"),
        ));
    }
}

pub fn check_plan_name(field: &str, plan: &str, out: &mut Vec<FieldViolation>) {
    let ok = (2..=MAX_PLAN_NAME_LEN).contains(&plan.len())
        && plan.as_bytes()[0].is_ascii_lowercase()
        && plan
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        out.push(FieldViolation::new(field, "must be the name of a plan"));
    }
}

pub fn check_labels(field: &str, labels: &BTreeMap<String, String>, out: &mut Vec<FieldViolation>) {
    if labels.len() > MAX_LABELS {
        out.push(FieldViolation::new(
            field,
            format!("must have at most {MAX_LABELS} entries"),
        ));
        return;
    }
    for (key, value) in labels {
        let key_ok = (1..=MAX_LABEL_KEY_LEN).contains(&key.len())
            && key.as_bytes()[0].is_ascii_lowercase()
            && key.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'.' | b'/' | b'-')
            });
        if !key_ok {
            let shown: String = key.chars().take(MAX_LABEL_KEY_LEN).collect();
            out.push(FieldViolation::new(
                format!("{field}[{shown:?}]"),
                "key must match ^[a-z][a-z0-9_./-]{0,62}$",
            ));
        }
        if value.len() > MAX_LABEL_VALUE_LEN || value.chars().any(char::is_control) {
            let shown: String = key.chars().take(MAX_LABEL_KEY_LEN).collect();
            out.push(FieldViolation::new(
                format!("{field}[{shown:?}]"),
                format!(
                    "value must be at most {MAX_LABEL_VALUE_LEN} bytes without control characters"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> TenantInput {
        TenantInput {
            slug: "acme".into(),
            display_name: "Acme Inc.".into(),
            admin_email: "admin@acme.test".into(),
            plan: String::new(),
            labels: BTreeMap::new(),
            placement: String::new(),
            contract_owner: String::new(),
        }
    }

    #[test]
    fn a_good_tenant_gets_the_default_plan() {
        let t = NewTenant::validate(input()).unwrap();
        assert_eq!(t.plan, DEFAULT_PLAN);
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let bad = TenantInput {
            slug: "Robert'); DROP TABLE tenants;--".into(),
            display_name: "x".repeat(201),
            admin_email: "not-an-email".into(),
            plan: "NoSuchPlan".into(),
            labels: [("Bad Key".to_owned(), "v".to_owned())].into(),
            placement: "region".into(),
            contract_owner: "GNOTAKEY".into(),
        };
        let fields: Vec<_> = NewTenant::validate(bad)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "tenant.slug",
                "tenant.display_name",
                "tenant.admin_email",
                "tenant.labels[\"Bad Key\"]",
                "tenant.plan",
                "tenant.placement",
                "tenant.contract_owner"
            ]
        );
    }

    #[test]
    fn slug_bounds() {
        for (slug, ok) in [
            ("abc", true),
            ("ab", false),
            ("a".repeat(40).as_str(), true),
            ("a".repeat(41).as_str(), false),
            ("1abc", false),
            ("abc_d", false),
            ("аbc", false), // Cyrillic a
            ("a-b-c", true),
        ] {
            let mut v = Vec::new();
            check_slug("s", slug, &mut v);
            assert_eq!(v.is_empty(), ok, "{slug}");
        }
    }

    #[test]
    fn digest_tells_parameters_apart() {
        let a = NewTenant::validate(input()).unwrap();
        let mut other = input();
        other.display_name = "Acme Inc".into();
        let b = NewTenant::validate(other).unwrap();
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), NewTenant::validate(input()).unwrap().digest());
    }

    #[test]
    fn email_violations_say_why() {
        let check = |email: &str| {
            let mut v = Vec::new();
            check_email("tenant.admin_email", email, &mut v);
            v.into_iter().map(|v| v.description).collect::<Vec<_>>()
        };
        assert!(check("admin@example.com").is_empty());
        assert!(check("user@bücher.example").is_empty());
        assert_eq!(check(""), ["is required"]);
        assert_eq!(
            check(&format!("{}@x.test", "a".repeat(300))),
            ["must be at most 254 bytes"]
        );
        assert_eq!(
            check("FjO@69'cK-7#r4bTR8ub"),
            ["must be an email address like admin@example.com: \
              the domain must be a host name (letters, digits and hyphens)"]
        );
        assert_eq!(
            check("a@b"),
            ["must be an email address like admin@example.com: \
              the domain must have at least two labels, like example.com"]
        );
        for bad in [
            "not-an-email",
            "a@[192.0.2.1]",
            "ü@b.com",
            "a@b.com.",
            "\"a b\"@c.com",
        ] {
            assert_eq!(check(bad).len(), 1, "{bad}");
        }
    }

    #[test]
    fn page_size_follows_aip_158() {
        assert_eq!(validate_page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(validate_page_size(5000).unwrap(), MAX_PAGE_SIZE);
        assert!(validate_page_size(-1).is_err());
    }
}

#[cfg(test)]
mod properties {
    //! Hostile input, generated: every validator either accepts a value
    //! that satisfies the stored constraints or names the field, and never
    //! panics; slugs map to identifiers that are safe to quote.

    use proptest::prelude::*;

    use super::*;
    use crate::steps::TenantNames;

    fn tenant(
        slug: String,
        display_name: String,
        admin_email: String,
        labels: BTreeMap<String, String>,
    ) -> TenantInput {
        TenantInput {
            slug,
            display_name,
            admin_email,
            plan: String::new(),
            labels,
            placement: String::new(),
            contract_owner: String::new(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn accepted_tenants_satisfy_the_schema(
            slug in ".{0,60}|[a-z][a-z0-9-]{0,45}",
            display_name in ".{0,250}",
            admin_email in ".{0,300}|[a-z]{1,10}@[a-z]{1,10}\\.test",
            labels in proptest::collection::btree_map(".{0,70}|[a-z][a-z0-9_./-]{0,70}", ".{0,70}", 0..70),
        ) {
            match NewTenant::validate(tenant(slug, display_name, admin_email, labels)) {
                Ok(t) => {
                    prop_assert!((3..=40).contains(&t.slug.len()));
                    prop_assert!(t.slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                    prop_assert!((1..=200).contains(&t.display_name.chars().count()));
                    prop_assert!(t.admin_email.len() <= 254 && t.admin_email.contains('@'));
                    prop_assert!(t.labels.len() <= 64);
                    // A valid slug always names a valid, quotable schema and role.
                    let names = TenantNames::derive(&t.slug, "tenant_").unwrap();
                    prop_assert!(!names.schema_ident()[1..names.schema_ident().len() - 1].contains('"'));
                }
                Err(violations) => {
                    prop_assert!(!violations.is_empty());
                    for v in violations {
                        prop_assert!(v.field.starts_with("tenant."));
                        prop_assert!(v.description.len() < 200, "descriptions do not echo input");
                    }
                }
            }
        }

        #[test]
        fn request_ids_page_sizes_and_ids_never_panic(id in ".{0,100}", size in any::<i32>(), tenant_id in ".{0,50}") {
            if let Ok(Some(accepted)) = validate_request_id(&id) {
                prop_assert!(accepted.len() <= 64);
            }
            match validate_page_size(size) {
                Ok(n) => prop_assert!((1..=MAX_PAGE_SIZE).contains(&n)),
                Err(v) => prop_assert_eq!(v.field, "page_size"),
            }
            let _ = validate_tenant_id("tenant_id", &tenant_id);
        }

        #[test]
        fn patches_and_page_tokens_never_panic(
            name in proptest::option::of(".{0,250}"),
            email in proptest::option::of(".{0,300}"),
            etag in proptest::option::of(".{0,40}"),
            token in ".{0,300}",
        ) {
            let patch = TenantPatch { display_name: name, admin_email: email, labels: None, legal_hold: None, expected_etag: etag };
            if let Err(violations) = validate_patch(&patch) {
                prop_assert!(violations.iter().all(|v| v.field.starts_with("tenant.")));
            }
            if let Err(v) = crate::domain::PageToken::decode(&token, "digest") {
                prop_assert_eq!(v.field, "page_token");
            }
        }

        #[test]
        fn slugs_that_derive_names_are_injective(a in "[a-z][a-z0-9-]{2,39}", b in "[a-z][a-z0-9-]{2,39}") {
            let (na, nb) = (TenantNames::derive(&a, "t_").unwrap(), TenantNames::derive(&b, "t_").unwrap());
            prop_assert_eq!(a == b, na.schema == nb.schema);
        }
    }
}

//! A tenant's placement: the label selector that says which database
//! servers may hold its data.

use std::collections::BTreeMap;

use super::{FieldViolation, check_labels};

/// The selector key that names a server outright.
pub const SERVER_KEY: &str = "server";

/// A parsed selector: every pair must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement(BTreeMap<String, String>);

impl Placement {
    /// Parses `key=value[,key=value...]` (blanks around each part are
    /// ignored); empty is "any server". Keys follow the label-key rules and
    /// appear once.
    pub fn parse(field: &str, text: &str) -> Result<Self, Vec<FieldViolation>> {
        let mut pairs = BTreeMap::new();
        let mut out = Vec::new();
        if text.len() > 1024 {
            return Err(vec![FieldViolation::new(
                field,
                "must be at most 1024 bytes",
            )]);
        }
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                out.push(FieldViolation::new(
                    field,
                    format!("{part:?} is not key=value (a selector such as region=eu)"),
                ));
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() {
                out.push(FieldViolation::new(field, format!("{key:?} has no value")));
            }
            if pairs.insert(key.to_owned(), value.to_owned()).is_some() {
                out.push(FieldViolation::new(
                    field,
                    format!("{key:?} appears more than once"),
                ));
            }
        }
        check_labels(field, &pairs, &mut out);
        if out.is_empty() {
            Ok(Placement(pairs))
        } else {
            Err(out)
        }
    }

    /// The server it names outright, if any.
    pub fn server(&self) -> Option<&str> {
        self.0.get(SERVER_KEY).map(String::as_str)
    }

    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The canonical text: pairs sorted by key, `key=value` joined by commas.
impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_to_their_canonical_form() {
        let p = Placement::parse("p", " tier=gold , region=eu").unwrap();
        assert_eq!(p.to_string(), "region=eu,tier=gold");
        assert_eq!(p.server(), None);
        assert!(Placement::parse("p", "").unwrap().is_empty());
        let named = Placement::parse("p", "server=db-2").unwrap();
        assert_eq!(named.server(), Some("db-2"));
    }

    #[test]
    fn malformed_selectors_are_named() {
        for bad in [
            "region",
            "region=",
            "Region=eu",
            "a=1,a=2",
            "region=e\u{7}u",
        ] {
            let err = Placement::parse("tenant.placement", bad).unwrap_err();
            assert!(
                err.iter().all(|v| v.field.starts_with("tenant.placement")),
                "{bad}: {err:?}"
            );
        }
    }
}

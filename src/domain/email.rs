//! The one validator for email addresses the server takes from users: a
//! tenant's `admin_email` (CreateTenant, UpdateTenant) and the
//! `billing.invoice_email` setting. What it accepts, the mailer (`lettre`
//! over plain SMTP) can send to.
//!
//! The rules are those of a deliverable RFC 5321 mailbox, narrower than the
//! RFC 5322 `addr-spec` grammar on purpose:
//!
//! - The whole address is at most 254 bytes, both as given and once its
//!   domain is converted to ASCII (RFC 5321 limits a forward path to 256
//!   octets including the angle brackets).
//! - Exactly one `@` separates the local part from the domain.
//! - The local part is an RFC 5321 `Dot-string`: 1 to 64 octets of `atext`
//!   (letters, digits and ``!#$%&'*+-/=?^_`{|}~``) in runs separated by
//!   single dots, with no dot first or last.
//!   - Quoted local parts (`"john doe"@example.com`) are refused: RFC 5321
//!     section 4.1.2 discourages them, many systems mishandle them, and
//!     nobody needs one for an administrative mailbox.
//!   - Non-ASCII local parts are refused: they need the SMTPUTF8 extension
//!     (RFC 6531), and the server's mailer sends plain SMTP.
//! - The domain is a host name. A non-ASCII domain is converted to its
//!   A-label (`xn--`) form with IDNA (UTS #46, STD3 ASCII rules), and an
//!   ASCII label that starts with `xn--` must be a valid A-label. Then:
//!   at most 253 octets, at least two labels, each 1 to 63 octets of
//!   letters, digits and hyphens, not starting or ending with a hyphen, and
//!   a last label (the top-level domain) that is not all digits (so the
//!   domain can't be an IPv4 address in disguise).
//!   - A trailing dot (the DNS root) is refused: it is legal in DNS but
//!     not in an address, and mail systems treat it inconsistently.
//!   - Address literals (`user@[192.0.2.1]`) are refused: they bypass MX
//!     lookup, most servers reject mail to them, and they would let a
//!     caller point the mailer at an arbitrary (internal) host.
//!
//! RFC 5322 `atext` would allow `'` and `#` in a dot-atom domain, so a
//! parser of message headers accepts `x@69'cK-7#r4b`; no DNS host name
//! holds those characters, so no mail can reach such a domain, and this
//! validator refuses it.

use std::fmt;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// The longest address: RFC 5321's 256-octet forward path less `<` and `>`.
pub const MAX_ADDRESS_LEN: usize = 254;
/// RFC 5321 section 4.5.3.1.1.
pub const MAX_LOCAL_PART_LEN: usize = 64;
/// RFC 1035 section 2.3.4 (255 octets on the wire, less the length octets).
pub const MAX_DOMAIN_LEN: usize = 253;
/// RFC 1035 section 2.3.4.
pub const MAX_LABEL_LEN: usize = 63;

/// Why an address was refused. The text (see [`EmailError::reason`]) never
/// echoes the input, so it is safe to return to callers and to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailError {
    /// The address is the empty string.
    Empty,
    /// More than [`MAX_ADDRESS_LEN`] bytes as given.
    TooLong,
    /// More than [`MAX_ADDRESS_LEN`] bytes once the domain is in A-label form.
    TooLongAsAscii,
    /// No `@` at all.
    MissingAt,
    /// More than one `@`.
    SeveralAts,
    /// The local part is a quoted string.
    QuotedLocalPart,
    /// Nothing before the `@`.
    EmptyLocalPart,
    /// The local part holds non-ASCII characters (would need SMTPUTF8).
    NonAsciiLocalPart,
    /// More than [`MAX_LOCAL_PART_LEN`] bytes before the `@`.
    LocalPartTooLong,
    /// A dot first, last or doubled in the local part.
    LocalPartDots,
    /// A character outside `atext` and `.` in the local part.
    LocalPartCharacter,
    /// Nothing after the `@`.
    EmptyDomain,
    /// The domain is an address literal like `[192.0.2.1]`.
    AddressLiteral,
    /// The domain ends with a dot.
    TrailingDot,
    /// A dot first or doubled in the domain.
    EmptyLabel,
    /// The domain holds a character that is not a letter, digit, hyphen or dot.
    DomainCharacter,
    /// A non-ASCII domain IDNA refuses, or an invalid `xn--` label.
    InvalidIdna,
    /// The domain has a single label.
    SingleLabel,
    /// A label longer than [`MAX_LABEL_LEN`] octets.
    LabelTooLong,
    /// A label starts or ends with a hyphen.
    LabelHyphen,
    /// More than [`MAX_DOMAIN_LEN`] octets in the domain.
    DomainTooLong,
    /// The top-level domain is all digits.
    NumericTld,
}

impl EmailError {
    /// A short, fixed explanation, fit to follow "must be an email address: ".
    pub fn reason(self) -> &'static str {
        match self {
            Self::Empty => "the address is empty",
            Self::TooLong => "the address must be at most 254 bytes",
            Self::TooLongAsAscii => {
                "the address must be at most 254 bytes once its domain is converted to ASCII"
            }
            Self::MissingAt => "the address needs an @ between the local part and the domain",
            Self::SeveralAts => "the address must have exactly one @",
            Self::QuotedLocalPart => "quoted local parts (\"...\"@) are not accepted",
            Self::EmptyLocalPart => "the local part (before the @) is empty",
            Self::NonAsciiLocalPart => {
                "the local part (before the @) must be ASCII; internationalized mailboxes are not supported"
            }
            Self::LocalPartTooLong => "the local part (before the @) must be at most 64 bytes",
            Self::LocalPartDots => {
                "the local part (before the @) must not start or end with a dot or have two dots in a row"
            }
            Self::LocalPartCharacter => {
                "the local part (before the @) may hold only letters, digits, dots and !#$%&'*+-/=?^_`{|}~"
            }
            Self::EmptyDomain => "the domain (after the @) is empty",
            Self::AddressLiteral => "address literals like [192.0.2.1] are not accepted",
            Self::TrailingDot => "the domain must not end with a dot",
            Self::EmptyLabel => "the domain must not start with a dot or have two dots in a row",
            Self::DomainCharacter => "the domain must be a host name (letters, digits and hyphens)",
            Self::InvalidIdna => "the domain is not a valid internationalized domain name",
            Self::SingleLabel => "the domain must have at least two labels, like example.com",
            Self::LabelTooLong => "each label of the domain must be at most 63 bytes",
            Self::LabelHyphen => "labels of the domain must not start or end with a hyphen",
            Self::DomainTooLong => "the domain must be at most 253 bytes",
            Self::NumericTld => "the top-level domain must not be all digits",
        }
    }
}

impl fmt::Display for EmailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for EmailError {}

/// Whether `address` is an email address the server accepts; see the
/// module documentation for the rules.
pub fn check_address(address: &str) -> Result<(), EmailError> {
    normalize(address).map(drop)
}

/// The ASCII form of an accepted address: the local part as given, `@`, and
/// the domain in lower case with its non-ASCII labels as A-labels
/// (`user@Bücher.Example` → `user@xn--bcher-kva.example`). Errors are those
/// of [`check_address`].
pub fn normalize(address: &str) -> Result<String, EmailError> {
    if address.is_empty() {
        return Err(EmailError::Empty);
    }
    // Bounds the work below, and what gets stored is what was given.
    if address.len() > MAX_ADDRESS_LEN {
        return Err(EmailError::TooLong);
    }
    if address.starts_with('"') {
        return Err(EmailError::QuotedLocalPart);
    }
    let Some((local, domain)) = address.split_once('@') else {
        return Err(EmailError::MissingAt);
    };
    if domain.contains('@') {
        return Err(EmailError::SeveralAts);
    }
    check_local_part(local)?;
    let domain = ascii_domain(domain)?;
    if local.len() + 1 + domain.len() > MAX_ADDRESS_LEN {
        return Err(EmailError::TooLongAsAscii);
    }
    Ok(format!("{local}@{domain}"))
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

fn check_local_part(local: &str) -> Result<(), EmailError> {
    if local.is_empty() {
        return Err(EmailError::EmptyLocalPart);
    }
    if !local.is_ascii() {
        return Err(EmailError::NonAsciiLocalPart);
    }
    if local.len() > MAX_LOCAL_PART_LEN {
        return Err(EmailError::LocalPartTooLong);
    }
    if local.split('.').any(str::is_empty) {
        return Err(EmailError::LocalPartDots);
    }
    if !local.bytes().all(|b| b == b'.' || is_atext(b)) {
        return Err(EmailError::LocalPartCharacter);
    }
    Ok(())
}

/// The domain in lower-case ASCII (A-labels for non-ASCII labels), checked.
fn ascii_domain(domain: &str) -> Result<String, EmailError> {
    if domain.is_empty() {
        return Err(EmailError::EmptyDomain);
    }
    if domain.starts_with('[') {
        return Err(EmailError::AddressLiteral);
    }
    let ascii = if domain.is_ascii() {
        let lower = domain.to_ascii_lowercase();
        check_host_name(&lower)?;
        // An `xn--` label claims to be an A-label: it must decode to a
        // valid U-label, or the name means nothing to IDNA-aware systems.
        if lower.split('.').any(|label| label.starts_with("xn--")) {
            to_ascii(&lower)?;
        }
        lower
    } else {
        let converted = to_ascii(domain)?;
        check_host_name(&converted)?;
        converted
    };
    Ok(ascii)
}

/// UTS #46 ToASCII with STD3 rules (only letters, digits, hyphens and dots
/// may come out). Hyphens are checked in the first and last position only:
/// `ab--cd` is a valid host name. Lengths are checked by the caller.
fn to_ascii(domain: &str) -> Result<String, EmailError> {
    Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Ignore,
        )
        .map(|ascii| ascii.into_owned())
        .map_err(|_| EmailError::InvalidIdna)
}

/// RFC 1123 host name rules on an ASCII domain.
fn check_host_name(domain: &str) -> Result<(), EmailError> {
    if domain.ends_with('.') {
        return Err(EmailError::TrailingDot);
    }
    if domain.split('.').any(str::is_empty) {
        return Err(EmailError::EmptyLabel);
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(EmailError::DomainCharacter);
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(EmailError::SingleLabel);
    }
    if labels.iter().any(|label| label.len() > MAX_LABEL_LEN) {
        return Err(EmailError::LabelTooLong);
    }
    if labels
        .iter()
        .any(|label| label.starts_with('-') || label.ends_with('-'))
    {
        return Err(EmailError::LabelHyphen);
    }
    if domain.len() > MAX_DOMAIN_LEN {
        return Err(EmailError::DomainTooLong);
    }
    let tld = labels[labels.len() - 1];
    if tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EmailError::NumericTld);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_addresses_are_accepted() {
        for address in [
            "admin@example.com",
            "first.last+tag@sub.example.co.uk",
            "o'brien@example.ie",
            "user@bücher.example",
            "x@xn--bcher-kva.example",
            "Admin@Example.COM",
            "a@b.co",
            "1@2.example",
            "!#$%&'*+-/=?^_`{|}~@example.com",
            "a@ab--cd.example",
            "a@123.example",
            "a@example.xn--p1ai",
            "a@пример.рф",
            "a@b.c",
        ] {
            assert_eq!(check_address(address), Ok(()), "{address}");
            assert!(
                address.parse::<lettre::Address>().is_ok(),
                "lettre takes {address}"
            );
        }
    }

    #[test]
    fn bad_addresses_are_refused_with_their_reason() {
        use EmailError::*;
        let local_65 = format!("{}@example.com", "a".repeat(65));
        let label_64 = format!("a@{}.com", "b".repeat(64));
        let local_64 = format!("{}@example.com", "a".repeat(64));
        let label_63 = format!("a@{}.com", "b".repeat(63));
        // 4 × 63 + 3 dots = 255 octets of domain: too long on its own.
        let long_domain = format!("a@{}", vec!["c".repeat(63); 4].join("."));
        // 254 bytes as given, but the A-label of ü (xn--tda) is longer than ü.
        let idna_long = format!("{}@ü{}.example", "a".repeat(63), ".bb".repeat(60));
        // 252 bytes as given, a 255-byte domain once converted.
        let idna_long_domain = format!("a@ü{}.example", ".bb".repeat(80));
        for (address, reason) in [
            ("FjO@69'cK-7#r4bTR8ub", DomainCharacter),
            ("a@b", SingleLabel),
            ("a@-b.com", LabelHyphen),
            ("a@b-.com", LabelHyphen),
            ("a@b..com", EmptyLabel),
            ("a@.b.com", EmptyLabel),
            (".a@b.com", LocalPartDots),
            ("a.@b.com", LocalPartDots),
            ("a..b@c.com", LocalPartDots),
            ("a@b.123", NumericTld),
            ("a@192.0.2.1", NumericTld),
            ("a@[192.0.2.1]", AddressLiteral),
            ("a@[IPv6:2001:db8::1]", AddressLiteral),
            ("\"a b\"@c.com", QuotedLocalPart),
            ("\"a@b\"@c.com", QuotedLocalPart),
            (local_65.as_str(), LocalPartTooLong),
            (label_64.as_str(), LabelTooLong),
            (long_domain.as_str(), TooLong),
            ("a@b.com.", TrailingDot),
            ("a@bücher.example.", TrailingDot),
            ("", Empty),
            ("admin.example.com", MissingAt),
            ("admin at acme", MissingAt),
            ("a@b@c.com", SeveralAts),
            ("@b.com", EmptyLocalPart),
            ("a@", EmptyDomain),
            ("ü@b.com", NonAsciiLocalPart),
            ("a\u{0}b@c.com", LocalPartCharacter),
            ("a@c\u{7}.com", DomainCharacter),
            ("a\n@c.com", LocalPartCharacter),
            ("a@c.com\r\nBcc: evil.example", DomainCharacter),
            ("a@c.com\r\nBcc: x@y.com", SeveralAts),
            ("a b@c.com", LocalPartCharacter),
            (" a@c.com", LocalPartCharacter),
            ("a@c .com", DomainCharacter),
            ("a@c.com ", DomainCharacter),
            ("a(comment)@c.com", LocalPartCharacter),
            ("a@b_c.com", DomainCharacter),
            ("a@xn--zz.example", InvalidIdna),
            ("a@xn--abc.example", InvalidIdna),
            ("a@bü'cher.example", InvalidIdna),
            ("a@bü cher.example", InvalidIdna),
            ("a@-bücher.example", InvalidIdna),
            ("a@bücher\u{a0}.example", InvalidIdna),
            ("a@\u{ff07}bücher.example", InvalidIdna),
            (idna_long.as_str(), TooLongAsAscii),
            (idna_long_domain.as_str(), DomainTooLong),
        ] {
            assert_eq!(check_address(address), Err(reason), "{address:?}");
        }
        assert_eq!(check_address(&local_64), Ok(()));
        assert_eq!(check_address(&label_63), Ok(()));
        assert_eq!(idna_long.len(), 254);
    }

    #[test]
    fn normalize_gives_the_ascii_form() {
        assert_eq!(
            normalize("User.Name@Bücher.Example").unwrap(),
            "User.Name@xn--bcher-kva.example"
        );
        assert_eq!(normalize("admin@example.com").unwrap(), "admin@example.com");
        assert_eq!(normalize("a@пример.рф").unwrap(), "a@xn--e1afmkfd.xn--p1ai");
        // U+3002 IDEOGRAPHIC FULL STOP is a dot to IDNA.
        assert_eq!(
            normalize("a@bücher。example").unwrap(),
            "a@xn--bcher-kva.example"
        );
        assert_eq!(normalize("a@b"), Err(EmailError::SingleLabel));
    }

    #[test]
    fn reasons_are_short_and_fixed() {
        let error = check_address("FjO@69'cK-7#r4bTR8ub").unwrap_err();
        assert_eq!(
            error.to_string(),
            "the domain must be a host name (letters, digits and hyphens)"
        );
        assert!(!error.to_string().contains("69'cK"));
    }
}

#[cfg(test)]
mod properties {
    //! Generated addresses: valid parts always make an address the server
    //! and its mailer accept; a character no host name holds always makes
    //! the domain refused; arbitrary input never panics.

    use proptest::prelude::*;

    use super::*;

    /// A dot-string: runs of atext joined by single dots.
    fn local_part() -> impl Strategy<Value = String> {
        proptest::collection::vec("[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}", 1..5)
            .prop_map(|runs| runs.join("."))
    }

    /// An LDH label, not claiming to be an A-label.
    fn label() -> impl Strategy<Value = String> {
        "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?".prop_filter("not an xn-- label", |l| {
            !l.to_ascii_lowercase().starts_with("xn--")
        })
    }

    fn domain() -> impl Strategy<Value = String> {
        (proptest::collection::vec(label(), 1..3), "[A-Za-z]{2,12}").prop_map(|(labels, tld)| {
            let mut labels = labels;
            labels.push(tld);
            labels.join(".")
        })
    }

    /// An ASCII character that no host name holds (not a letter, digit,
    /// hyphen or dot), or a non-ASCII one that IDNA refuses or maps to one.
    fn foreign() -> impl Strategy<Value = char> {
        prop_oneof![
            any::<u8>()
                .prop_filter("not LDH or dot", |b| {
                    b.is_ascii() && !b.is_ascii_alphanumeric() && *b != b'-' && *b != b'.'
                })
                .prop_map(char::from),
            // C1 controls, NO-BREAK SPACE (maps to a space), fullwidth
            // !"#$%&'()*+, (map to their ASCII twins), line and paragraph
            // separators, replacement character.
            "[\u{80}-\u{a0}\u{ff01}-\u{ff0c}\u{2028}\u{2029}\u{fffd}]"
                .prop_map(|s| s.chars().next().unwrap()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn addresses_from_valid_parts_are_accepted_and_sendable(
            local in local_part(),
            domain in domain(),
        ) {
            let address = format!("{local}@{domain}");
            prop_assume!(address.len() <= MAX_ADDRESS_LEN);
            prop_assert_eq!(check_address(&address), Ok(()), "{}", address);
            prop_assert_eq!(normalize(&address).unwrap(), format!("{local}@{}", domain.to_ascii_lowercase()));
            prop_assert!(address.parse::<lettre::Address>().is_ok(), "lettre refuses {}", address);
        }

        #[test]
        fn internationalized_domains_are_accepted_as_a_labels(
            local in local_part(),
            labels in proptest::collection::vec("[a-z0-9äöüéèñçøå]{1,15}", 1..3),
            tld in "[a-z]{2,6}|рф|中国",
        ) {
            let address = format!("{local}@{}.{tld}", labels.join("."));
            let ascii = normalize(&address);
            prop_assert!(ascii.is_ok(), "{} refused: {:?}", address, ascii);
            let ascii = ascii.unwrap();
            prop_assert!(ascii.is_ascii());
            prop_assert_eq!(check_address(&ascii), Ok(()));
            prop_assert!(ascii.parse::<lettre::Address>().is_ok(), "lettre refuses {}", ascii);
        }

        #[test]
        fn a_character_no_host_name_holds_makes_the_domain_refused(
            local in local_part(),
            domain in domain(),
            bad in foreign(),
            at in any::<prop::sample::Index>(),
        ) {
            let mut domain = domain;
            let boundaries: Vec<usize> = (0..=domain.len()).filter(|&i| domain.is_char_boundary(i)).collect();
            domain.insert(boundaries[at.index(boundaries.len())], bad);
            let address = format!("{local}@{domain}");
            prop_assert!(check_address(&address).is_err(), "{:?} accepted", address);
        }

        #[test]
        fn arbitrary_input_never_panics_and_accepted_is_ascii(
            address in ".*|[ -~]{0,30}@[ -~]{0,30}|[a-z.]{0,10}@[^@]{0,30}",
        ) {
            if let Ok(ascii) = normalize(&address) {
                prop_assert_eq!(check_address(&address), Ok(()));
                prop_assert!(ascii.is_ascii());
                prop_assert!(ascii.len() <= MAX_ADDRESS_LEN);
                prop_assert_eq!(ascii.matches('@').count(), 1);
                prop_assert_eq!(normalize(&ascii), Ok(ascii.clone()), "normalizing is idempotent");
                prop_assert!(ascii.parse::<lettre::Address>().is_ok(), "lettre refuses {}", ascii);
            } else {
                prop_assert!(check_address(&address).is_err());
            }
        }
    }
}

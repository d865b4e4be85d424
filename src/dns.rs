//! A tenant's DNS name, by RFC 2136 dynamic updates signed with TSIG
//! (RFC 8945), through hickory: `<slug>.<base domain>` pointing at the
//! configured target, and beside it the ownership record
//! `_tenantd.<slug>.<base domain> TXT "tenantd-tenant=<id>"`.
//!
//! The ownership record cannot share the name: a CNAME may have no other
//! data beside it (RFC 1034 3.6.2), and a server given both in one update
//! keeps the CNAME and drops the rest. So:
//!
//! ```text
//! create:  prerequisites  <name> not in use, _tenantd.<name> not in use
//!          updates        <name> CNAME|A|AAAA target, _tenantd.<name> TXT ours
//!   YXDOMAIN (something is there) ->
//! retry:   prerequisite   _tenantd.<name> TXT is exactly ours
//!          updates        the same (adding what exists changes nothing)
//!   NXRRSET -> the name belongs to someone else: permanent, nothing touched
//! delete:  prerequisite   _tenantd.<name> TXT is exactly ours
//!          updates        delete <name>'s RRset of the target's type, our TXT
//! ACME:    prerequisite   _tenantd.<name> TXT is exactly ours
//!          updates        delete _acme-challenge.<name> TXT, add the answer
//!                         (clearing: the delete alone)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use hickory_net::DnsHandle as _;
use hickory_net::DnsMultiplexer;
use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_proto::op::{
    DnsRequest, DnsRequestOptions, Message, OpCode, Query, ResponseCode, UpdateMessage as _,
};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::dns::{DnsConfig, TsigAlgorithm};

/// TTL of the records written.
const TTL: u32 = 300;
/// TSIG's allowed clock difference, BIND's default.
const FUDGE: u16 = 300;
/// One exchange with the server.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The label of the ownership record under a tenant's name.
const OWNER_LABEL: &str = "_tenantd";
/// The label ACME's DNS-01 challenge looks under (RFC 8555 8.4).
const CHALLENGE_LABEL: &str = "_acme-challenge";
/// TTL of a challenge record: validation servers must not see a stale one
/// when an order is replaced.
const CHALLENGE_TTL: u32 = 60;

/// Why an update did not happen. Messages name the server's answer, never
/// the key's secret.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The server refused the update for good: a name that is not ours,
    /// a key it does not accept, a zone it does not serve.
    #[error("{0}")]
    Refused(String),
    /// The server did not answer (or not in time, or failed to): try
    /// again later.
    #[error("DNS server {server}: {detail}")]
    Unreachable { server: SocketAddr, detail: String },
    #[error("DNS configuration: {0}")]
    Config(String),
}

impl DnsError {
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DnsError::Unreachable { .. })
    }
}

/// Writes tenants' names to the configured zone.
pub struct Dns {
    server: SocketAddr,
    zone: Name,
    base: Name,
    key_name: Name,
    algorithm: hickory_proto::rr::rdata::tsig::TsigAlgorithm,
    secret: Vec<u8>,
    target: RData,
}

impl Dns {
    pub fn new(config: &DnsConfig) -> Result<Self, DnsError> {
        let name = |text: &str| {
            Name::from_ascii(text).map_err(|e| DnsError::Config(format!("{text}: {e}")))
        };
        let target = match config.target.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => RData::A(A(a)),
            Ok(IpAddr::V6(a)) => RData::AAAA(AAAA(a)),
            Err(_) => {
                let mut target = config.target.clone();
                if !target.ends_with('.') {
                    target.push('.');
                }
                RData::CNAME(CNAME(name(&target)?))
            }
        };
        let secret = base64::engine::general_purpose::STANDARD
            .decode(config.secret.expose_secret().trim())
            .map_err(|_| DnsError::Config("the TSIG secret is not base64".into()))?;
        use hickory_proto::rr::rdata::tsig::TsigAlgorithm as Hmac;
        Ok(Self {
            server: config.server,
            zone: name(&config.zone)?,
            base: name(&config.base_domain)?,
            key_name: name(&config.key_name)?,
            algorithm: match config.algorithm {
                TsigAlgorithm::HmacSha256 => Hmac::HmacSha256,
                TsigAlgorithm::HmacSha384 => Hmac::HmacSha384,
                TsigAlgorithm::HmacSha512 => Hmac::HmacSha512,
            },
            secret,
            target,
        })
    }

    /// `<slug>.<base domain>` (the slug is a valid label: lower-case
    /// letters, digits and hyphens).
    pub fn name_of(&self, slug: &str) -> Result<Name, DnsError> {
        Name::from_ascii(slug)
            .and_then(|label| label.append_domain(&self.base))
            .map_err(|e| DnsError::Config(format!("{slug}: {e}")))
    }

    fn owner_name(name: &Name) -> Result<Name, DnsError> {
        name.prepend_label(OWNER_LABEL)
            .map_err(|e| DnsError::Config(e.to_string()))
    }

    fn ownership(tenant_id: Uuid) -> RData {
        RData::TXT(TXT::new(vec![format!("tenantd-tenant={tenant_id}")]))
    }

    /// Creates the tenant's records, or finds them there already (a
    /// retry). Returns the name (without its final dot).
    pub async fn ensure(&self, slug: &str, tenant_id: Uuid) -> Result<String, DnsError> {
        let name = self.name_of(slug)?;
        let owner = Self::owner_name(&name)?;
        let ours = Self::ownership(tenant_id);
        let mut create = self.update();
        create.add_pre_requisite(not_in_use(&name));
        create.add_pre_requisite(not_in_use(&owner));
        self.add_records(&mut create, &name, &owner, &ours);
        let answer = match self.send(create).await? {
            ResponseCode::YXDomain => {
                let mut again = self.update();
                again.add_pre_requisite(Record::from_rdata(owner.clone(), 0, ours.clone()));
                self.add_records(&mut again, &name, &owner, &ours);
                self.send(again).await?
            }
            other => other,
        };
        match answer {
            ResponseCode::NoError => Ok(text(&name)),
            ResponseCode::NXRRSet | ResponseCode::YXDomain => Err(DnsError::Refused(format!(
                "{} is in use and not this tenant's (no {} TXT naming it); nothing was changed",
                text(&name),
                text(&owner)
            ))),
            other => Err(self.refused("creating", &name, other)),
        }
    }

    /// Deletes exactly the records `ensure` wrote, if they are still this
    /// tenant's; a name already gone is fine.
    pub async fn remove(&self, slug: &str, tenant_id: Uuid) -> Result<(), DnsError> {
        let name = self.name_of(slug)?;
        let owner = Self::owner_name(&name)?;
        let ours = Self::ownership(tenant_id);
        let mut delete = self.update();
        delete.add_pre_requisite(Record::from_rdata(owner.clone(), 0, ours.clone()));
        // The whole RRset of the target's type: the name is this tenant's
        // (the prerequisite), and the target may have changed since.
        delete.add_update(with_class(
            Record::update0(name.clone(), 0, self.target.record_type()),
            DNSClass::ANY,
        ));
        delete.add_update(with_class(
            Record::from_rdata(owner.clone(), 0, ours),
            DNSClass::NONE,
        ));
        match self.send(delete).await? {
            // Not ours (any more), or gone: nothing of ours to delete.
            ResponseCode::NoError | ResponseCode::NXRRSet => Ok(()),
            other => Err(self.refused("deleting", &name, other)),
        }
    }

    /// Writes the DNS-01 answer `value` at `_acme-challenge.<name>` in place
    /// of whatever was there (an answer of a replaced order), if the name
    /// is still this tenant's.
    pub async fn set_challenge(
        &self,
        slug: &str,
        tenant_id: Uuid,
        value: &str,
    ) -> Result<(), DnsError> {
        let (name, mut update) = self.challenge_update(slug, tenant_id)?;
        let challenge = Self::challenge_name(&name)?;
        update.add_update(Record::from_rdata(
            challenge,
            CHALLENGE_TTL,
            RData::TXT(TXT::new(vec![value.to_owned()])),
        ));
        match self.send(update).await? {
            ResponseCode::NoError => Ok(()),
            ResponseCode::NXRRSet => Err(DnsError::Refused(format!(
                "{} is no longer this tenant's; no challenge was written",
                text(&name)
            ))),
            other => Err(self.refused("answering the challenge of", &name, other)),
        }
    }

    /// Deletes the DNS-01 answers at `_acme-challenge.<name>`, if the name
    /// is still this tenant's; none there is fine.
    pub async fn clear_challenge(&self, slug: &str, tenant_id: Uuid) -> Result<(), DnsError> {
        let (name, update) = self.challenge_update(slug, tenant_id)?;
        match self.send(update).await? {
            ResponseCode::NoError | ResponseCode::NXRRSet => Ok(()),
            other => Err(self.refused("clearing the challenge of", &name, other)),
        }
    }

    /// An update that requires the ownership record and deletes the
    /// challenge's TXT RRset; the tenant's name with it.
    fn challenge_update(&self, slug: &str, tenant_id: Uuid) -> Result<(Name, Message), DnsError> {
        let name = self.name_of(slug)?;
        let owner = Self::owner_name(&name)?;
        let mut update = self.update();
        update.add_pre_requisite(Record::from_rdata(owner, 0, Self::ownership(tenant_id)));
        update.add_update(with_class(
            Record::update0(Self::challenge_name(&name)?, 0, RecordType::TXT),
            DNSClass::ANY,
        ));
        Ok((name, update))
    }

    fn challenge_name(name: &Name) -> Result<Name, DnsError> {
        name.prepend_label(CHALLENGE_LABEL)
            .map_err(|e| DnsError::Config(e.to_string()))
    }

    /// The server's answer other than success: SERVFAIL (a zone still
    /// loading, a server in trouble) is worth another attempt; NOTAUTH,
    /// REFUSED, NOTZONE and the rest are its final word.
    fn refused(&self, doing: &str, name: &Name, code: ResponseCode) -> DnsError {
        if code == ResponseCode::ServFail {
            return DnsError::Unreachable {
                server: self.server,
                detail: format!("{doing} {}: {code}", text(name)),
            };
        }
        DnsError::Refused(format!(
            "DNS server {} refused {doing} {}: {code}",
            self.server,
            text(name)
        ))
    }

    fn update(&self) -> Message {
        let mut message = Message::query();
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        let mut zone = Query::new();
        zone.set_name(self.zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        message.add_zone(zone);
        message
    }

    fn add_records(&self, message: &mut Message, name: &Name, owner: &Name, ours: &RData) {
        message.add_update(Record::from_rdata(name.clone(), TTL, self.target.clone()));
        message.add_update(Record::from_rdata(owner.clone(), TTL, ours.clone()));
    }

    /// Sends a signed update over TCP and returns the server's answer. A
    /// response whose signature does not verify, or that carries a TSIG
    /// error, is the key's refusal (the server answers NOTAUTH unsigned for
    /// a bad signature or an unknown key).
    async fn send(&self, message: Message) -> Result<ResponseCode, DnsError> {
        let unreachable = |detail: String| DnsError::Unreachable {
            server: self.server,
            detail,
        };
        let signer = TSigner::new(
            self.secret.clone(),
            self.algorithm.clone(),
            self.key_name.clone(),
            FUDGE,
        )
        .map_err(|e| DnsError::Config(e.to_string()))?;
        let (connect, handle) = TcpClientStream::new(
            self.server,
            None,
            Some(TIMEOUT),
            TokioRuntimeProvider::new(),
        );
        let stream = connect.await.map_err(|e| unreachable(e.to_string()))?;
        let multiplexer = DnsMultiplexer::new(stream, handle)
            .with_timeout(TIMEOUT)
            .with_signer(signer);
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(multiplexer);
        let background = tokio::spawn(background);
        let answer = client
            .send(DnsRequest::new(message, DnsRequestOptions::default()))
            .next()
            .await;
        background.abort();
        let response = match answer {
            Some(Ok(response)) => response,
            Some(Err(e)) if is_timeout(&e.to_string()) => return Err(unreachable(e.to_string())),
            // The response did not verify: the server refused the key.
            Some(Err(_)) => {
                return Err(DnsError::Refused(format!(
                    "DNS server {} refused the update: NOTAUTH (its answer is not signed with key {}: a wrong secret or an unknown key)",
                    self.server,
                    text(&self.key_name)
                )));
            }
            None => return Err(unreachable("no answer".into())),
        };
        if let Some(error) = response.signature().and_then(|s| s.data.error) {
            return Err(DnsError::Refused(format!(
                "DNS server {} refused the key {}: {} ({error:?})",
                self.server,
                text(&self.key_name),
                response.response_code
            )));
        }
        Ok(response.response_code)
    }
}

fn is_timeout(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("timed out") || message.contains("timeout") || message.contains("connection")
}

/// RFC 2136 2.4.5, "name is not in use": class NONE, type ANY, empty.
fn not_in_use(name: &Name) -> Record {
    with_class(
        Record::update0(name.clone(), 0, RecordType::ANY),
        DNSClass::NONE,
    )
}

fn with_class(mut record: Record, class: DNSClass) -> Record {
    record.dns_class = class;
    record
}

/// A name as people write it: no final dot.
fn text(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_owned()
}

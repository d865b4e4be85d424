//! The ledger the local network keeps: entries with their TTLs, the latest
//! ledger header fields, and the record of every transaction, plus its
//! on-disk form (JSON holding base64 XDR, replaced atomically).
//!
//! Entries live behind an `Rc` so the simulator gets a snapshot without a
//! copy; the apply path copies on write (`Rc::make_mut`).

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use soroban_env_host::HostError;
use soroban_env_host::storage::{EntryWithLiveUntil, SnapshotSource};
use soroban_env_host::xdr::{
    AccountEntry, AccountEntryExt, AccountId, LedgerEntry, LedgerEntryData, LedgerEntryExt,
    LedgerKey, LedgerKeyAccount, LedgerKeyContractCode, LedgerKeyContractData, Limits, PublicKey,
    ReadXdr, SequenceNumber, String32, Thresholds, TransactionEnvelope, Uint256, VecM, WriteXdr,
};

use super::Error;

/// One stored entry and, for contract data and code, the last ledger it is live in.
#[derive(Debug, Clone)]
pub struct Stored {
    pub entry: LedgerEntry,
    pub live_until: Option<u32>,
}

/// A transaction the network applied.
#[derive(Debug, Clone)]
pub struct AppliedTransaction {
    pub hash: [u8; 32],
    pub ledger: u32,
    /// 1-based position in its ledger.
    pub application_order: u32,
    /// Close time of its ledger, unix seconds.
    pub created_at: u64,
    pub success: bool,
    pub envelope: TransactionEnvelope,
    /// `TransactionResult` XDR.
    pub result: Vec<u8>,
    /// `TransactionMeta` XDR.
    pub meta: Vec<u8>,
}

/// Everything the network knows.
pub struct Ledger {
    pub sequence: u32,
    /// Close time of the latest ledger, unix seconds.
    pub close_time: u64,
    pub genesis_close_time: u64,
    /// Hash chaining every header so far; what `getLatestLedger` reports as id.
    pub header_hash: [u8; 32],
    pub entries: Rc<BTreeMap<LedgerKey, Stored>>,
    pub applied: Vec<AppliedTransaction>,
}

/// The first ledger's sequence number, as on a fresh stellar-core network.
pub const GENESIS_LEDGER: u32 = 1;

impl Ledger {
    /// A new network whose genesis ledger holds `accounts`.
    pub fn genesis(accounts: &[(stellar_strkey::ed25519::PublicKey, i64)], now: u64) -> Self {
        let mut entries = BTreeMap::new();
        for (key, balance) in accounts {
            let entry = account_entry(key.0, *balance, GENESIS_LEDGER);
            entries.insert(
                account_key(key.0),
                Stored {
                    entry,
                    live_until: None,
                },
            );
        }
        Self {
            sequence: GENESIS_LEDGER,
            close_time: now,
            genesis_close_time: now,
            header_hash: Sha256::digest(GENESIS_LEDGER.to_be_bytes()).into(),
            entries: Rc::new(entries),
            applied: Vec::new(),
        }
    }

    /// The entry at `key` if it exists and is live in the latest ledger.
    pub fn live(&self, key: &LedgerKey) -> Option<&Stored> {
        self.entries
            .get(key)
            .filter(|s| s.live_until.is_none_or(|until| until >= self.sequence))
    }

    /// Advances to the next ledger, closing at `now` (never before the previous close).
    pub fn advance(&mut self, now: u64) {
        self.sequence += 1;
        self.close_time = now.max(self.close_time);
        let mut hasher = Sha256::new();
        hasher.update(self.header_hash);
        hasher.update(self.sequence.to_be_bytes());
        hasher.update(self.close_time.to_be_bytes());
        self.header_hash = hasher.finalize().into();
    }

    pub fn find(&self, hash: &[u8; 32]) -> Option<&AppliedTransaction> {
        self.applied.iter().find(|t| &t.hash == hash)
    }
}

/// The ledger entry of a genesis account: sequence number `ledger << 32`,
/// master key weight 1 and all thresholds 0, as core creates accounts.
pub fn account_entry(key: [u8; 32], balance: i64, ledger: u32) -> LedgerEntry {
    LedgerEntry {
        last_modified_ledger_seq: ledger,
        data: LedgerEntryData::Account(AccountEntry {
            account_id: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key))),
            balance,
            seq_num: SequenceNumber(i64::from(ledger) << 32),
            num_sub_entries: 0,
            inflation_dest: None,
            flags: 0,
            home_domain: String32::default(),
            thresholds: Thresholds([1, 0, 0, 0]),
            signers: VecM::default(),
            ext: AccountEntryExt::V0,
        }),
        ext: LedgerEntryExt::V0,
    }
}

pub fn account_key(key: [u8; 32]) -> LedgerKey {
    LedgerKey::Account(LedgerKeyAccount {
        account_id: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key))),
    })
}

/// The key of `entry`, for the entry kinds a Soroban network stores.
pub fn entry_key(entry: &LedgerEntry) -> Option<LedgerKey> {
    match &entry.data {
        LedgerEntryData::Account(a) => Some(LedgerKey::Account(LedgerKeyAccount {
            account_id: a.account_id.clone(),
        })),
        LedgerEntryData::ContractData(d) => Some(LedgerKey::ContractData(LedgerKeyContractData {
            contract: d.contract.clone(),
            key: d.key.clone(),
            durability: d.durability,
        })),
        LedgerEntryData::ContractCode(c) => Some(LedgerKey::ContractCode(LedgerKeyContractCode {
            hash: c.hash.clone(),
        })),
        _ => None,
    }
}

/// A read-only view of the entries for the simulator.
pub struct Snapshot(pub Rc<BTreeMap<LedgerKey, Stored>>);

impl SnapshotSource for Snapshot {
    fn get(&self, key: &Rc<LedgerKey>) -> Result<Option<EntryWithLiveUntil>, HostError> {
        Ok(self
            .0
            .get(key.as_ref())
            .map(|s| (Rc::new(s.entry.clone()), s.live_until)))
    }
}

/// The on-disk form of a [`Ledger`].
#[derive(Serialize, Deserialize)]
struct Persisted {
    sequence: u32,
    close_time: u64,
    genesis_close_time: u64,
    header_hash: String,
    entries: Vec<PersistedEntry>,
    applied: Vec<PersistedTransaction>,
}

#[derive(Serialize, Deserialize)]
struct PersistedEntry {
    /// Base64 `LedgerEntry`.
    entry: String,
    live_until: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct PersistedTransaction {
    hash: String,
    ledger: u32,
    application_order: u32,
    created_at: u64,
    success: bool,
    envelope: String,
    result: String,
    meta: String,
}

impl Ledger {
    /// Writes the ledger to `path` atomically: a temporary file next to it,
    /// then a rename, so a crash leaves either the old or the new state.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let persisted = Persisted {
            sequence: self.sequence,
            close_time: self.close_time,
            genesis_close_time: self.genesis_close_time,
            header_hash: hex::encode(self.header_hash),
            entries: self
                .entries
                .values()
                .map(|s| {
                    Ok(PersistedEntry {
                        entry: s.entry.to_xdr_base64(Limits::none())?,
                        live_until: s.live_until,
                    })
                })
                .collect::<Result<_, Error>>()?,
            applied: self
                .applied
                .iter()
                .map(|t| {
                    Ok(PersistedTransaction {
                        hash: hex::encode(t.hash),
                        ledger: t.ledger,
                        application_order: t.application_order,
                        created_at: t.created_at,
                        success: t.success,
                        envelope: t.envelope.to_xdr_base64(Limits::none())?,
                        result: b64.encode(&t.result),
                        meta: b64.encode(&t.meta),
                    })
                })
                .collect::<Result<_, Error>>()?,
        };
        let json = serde_json::to_vec(&persisted).map_err(|e| Error::State(e.to_string()))?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let mut file = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
        std::io::Write::write_all(&mut file, &json)?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| Error::Io(e.error))?;
        Ok(())
    }

    /// Reads a ledger [`save`](Self::save) wrote.
    pub fn load(path: &Path) -> Result<Self, Error> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let bad = |what: &str| Error::State(format!("{}: {what}", path.display()));
        let json = std::fs::read(path)?;
        let p: Persisted = serde_json::from_slice(&json).map_err(|e| bad(&e.to_string()))?;
        let mut entries = BTreeMap::new();
        for e in p.entries {
            let entry = LedgerEntry::from_xdr_base64(&e.entry, Limits::none())?;
            let key = entry_key(&entry).ok_or_else(|| bad("unsupported entry type"))?;
            entries.insert(
                key,
                Stored {
                    entry,
                    live_until: e.live_until,
                },
            );
        }
        let hash32 = |s: &str| -> Result<[u8; 32], Error> {
            hex::decode(s)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| bad("bad hash"))
        };
        let mut applied = Vec::with_capacity(p.applied.len());
        for t in p.applied {
            applied.push(AppliedTransaction {
                hash: hash32(&t.hash)?,
                ledger: t.ledger,
                application_order: t.application_order,
                created_at: t.created_at,
                success: t.success,
                envelope: TransactionEnvelope::from_xdr_base64(&t.envelope, Limits::none())?,
                result: b64.decode(&t.result).map_err(|e| bad(&e.to_string()))?,
                meta: b64.decode(&t.meta).map_err(|e| bad(&e.to_string()))?,
            });
        }
        Ok(Self {
            sequence: p.sequence,
            close_time: p.close_time,
            genesis_close_time: p.genesis_close_time,
            header_hash: hash32(&p.header_hash)?,
            entries: Rc::new(entries),
            applied,
        })
    }
}

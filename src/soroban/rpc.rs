//! The Soroban RPC JSON-RPC 2.0 protocol (stellar-rpc), as far as the
//! `deploy_contract` step uses it: the method names and the shapes of their
//! parameters and results, shared by the client and the local network so
//! both speak exactly the same wire format.
//!
//! XDR values travel as base64 strings; 64-bit amounts (fees) as decimal
//! strings, as stellar-rpc writes them.

use serde::{Deserialize, Serialize};

pub const GET_NETWORK: &str = "getNetwork";
pub const GET_LATEST_LEDGER: &str = "getLatestLedger";
pub const GET_LEDGER_ENTRIES: &str = "getLedgerEntries";
pub const SIMULATE_TRANSACTION: &str = "simulateTransaction";
pub const SEND_TRANSACTION: &str = "sendTransaction";
pub const GET_TRANSACTION: &str = "getTransaction";

/// JSON-RPC error codes (JSON-RPC 2.0 section 5.1).
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
}

/// A JSON-RPC request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request<P> {
    pub jsonrpc: String,
    pub id: serde_json::Value,
    pub method: String,
    #[serde(default)]
    pub params: P,
}

/// A JSON-RPC response: `result` or `error`, never both.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response<R> {
    pub jsonrpc: String,
    pub id: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<R>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("RPC error {code}: {message}")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

/// `getNetwork` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetNetworkResult {
    pub passphrase: String,
    pub protocol_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendbot_url: Option<String>,
}

/// `getLatestLedger` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetLatestLedgerResult {
    /// Hex of the ledger header hash.
    pub id: String,
    pub protocol_version: u32,
    pub sequence: u32,
}

/// `getLedgerEntries` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetLedgerEntriesParams {
    /// Base64 `LedgerKey`s.
    pub keys: Vec<String>,
}

/// `getLedgerEntries` result: only the keys that exist (and are live).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetLedgerEntriesResult {
    #[serde(default)]
    pub entries: Vec<LedgerEntryResult>,
    pub latest_ledger: u32,
}

/// One entry of `getLedgerEntries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryResult {
    /// Base64 `LedgerKey`.
    pub key: String,
    /// Base64 `LedgerEntryData`.
    pub xdr: String,
    pub last_modified_ledger_seq: u32,
    /// For contract data and code: the last ledger the entry is live in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_until_ledger_seq: Option<u32>,
}

/// `simulateTransaction`, `sendTransaction` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionParams {
    /// Base64 `TransactionEnvelope`.
    pub transaction: String,
}

/// `simulateTransaction` result. On failure only `error` and
/// `latest_ledger` are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulateTransactionResult {
    pub latest_ledger: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Base64 `SorobanTransactionData`: footprint, resources, resource fee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_data: Option<String>,
    /// Stroops, as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resource_fee: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<SimulateHostFunctionResult>,
    /// Base64 `DiagnosticEvent`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

/// The outcome of the simulated host function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimulateHostFunctionResult {
    /// Base64 `SorobanAuthorizationEntry`s the transaction must carry.
    #[serde(default)]
    pub auth: Vec<String>,
    /// Base64 `ScVal`: the return value.
    pub xdr: String,
}

/// `sendTransaction` statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SendStatus {
    /// Accepted; it will be applied in a coming ledger.
    Pending,
    /// Already received: the same transaction hash.
    Duplicate,
    /// Not accepted now (queue full, one pending per account); try again.
    TryAgainLater,
    /// Rejected; `error_result_xdr` says why.
    Error,
}

/// `sendTransaction` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendTransactionResult {
    pub status: SendStatus,
    /// Hex of the transaction hash.
    pub hash: String,
    pub latest_ledger: u32,
    /// Unix seconds, as a decimal string.
    pub latest_ledger_close_time: String,
    /// Base64 `TransactionResult`, with status ERROR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_result_xdr: Option<String>,
}

/// `getTransaction` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetTransactionParams {
    /// Hex of the transaction hash.
    pub hash: String,
}

/// `getTransaction` statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransactionStatus {
    Success,
    Failed,
    /// Not in any ledger the server keeps (yet, or any more).
    NotFound,
}

/// `getTransaction` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetTransactionResult {
    pub status: TransactionStatus,
    pub latest_ledger: u32,
    /// Unix seconds, as a decimal string.
    pub latest_ledger_close_time: String,
    pub oldest_ledger: u32,
    /// Unix seconds, as a decimal string.
    pub oldest_ledger_close_time: String,
    /// The ledger that applied it (SUCCESS, FAILED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<u32>,
    /// Unix seconds, as a decimal string (SUCCESS, FAILED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_order: Option<u32>,
    /// Base64 `TransactionEnvelope` (SUCCESS, FAILED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope_xdr: Option<String>,
    /// Base64 `TransactionResult` (SUCCESS, FAILED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_xdr: Option<String>,
    /// Base64 `TransactionMeta` (SUCCESS, FAILED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_meta_xdr: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_use_the_wire_names() {
        assert_eq!(
            serde_json::to_string(&SendStatus::TryAgainLater).unwrap(),
            "\"TRY_AGAIN_LATER\""
        );
        assert_eq!(
            serde_json::from_str::<TransactionStatus>("\"NOT_FOUND\"").unwrap(),
            TransactionStatus::NotFound
        );
    }

    #[test]
    fn results_read_stellar_rpc_documents() {
        // Shapes from the stellar-rpc method reference.
        let sent: SendTransactionResult = serde_json::from_str(
            r#"{"status":"PENDING","hash":"d8ec9b68780314ffdfdfc2194b1b35dd27d7303c3bceaef6447e31631a1419dc","latestLedger":2553978,"latestLedgerCloseTime":"1700159337"}"#,
        )
        .unwrap();
        assert_eq!(sent.status, SendStatus::Pending);
        let entries: GetLedgerEntriesResult = serde_json::from_str(
            r#"{"entries":[{"key":"AAAAAA==","xdr":"AAAAAA==","lastModifiedLedgerSeq":2552504,"liveUntilLedgerSeq":2552505}],"latestLedger":2552990}"#,
        )
        .unwrap();
        assert_eq!(entries.entries[0].live_until_ledger_seq, Some(2552505));
    }
}

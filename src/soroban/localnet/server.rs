//! The JSON-RPC front: decodes requests strictly (JSON-RPC 2.0 envelope,
//! stellar-rpc parameter shapes, base64 XDR), applies injected faults, and
//! forwards everything that needs the ledger to the ledger thread.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use soroban_env_host::xdr::{
    LedgerKey, Limits, ReadXdr, TransactionEnvelope, TransactionResultResult, WriteXdr,
};
use tokio::sync::oneshot;

use super::Fault;
use super::network::PROTOCOL_VERSION;
use super::worker::{Command, error_result_xdr};
use crate::soroban::rpc::{
    self, GetLatestLedgerResult, GetLedgerEntriesParams, GetLedgerEntriesResult, GetNetworkResult,
    GetTransactionParams, GetTransactionResult, LedgerEntryResult, RpcError, SendStatus,
    SendTransactionResult, TransactionParams, TransactionStatus, code,
};
use crate::soroban::transaction_hash;

/// Most keys one `getLedgerEntries` call may ask for (stellar-rpc's limit).
pub const MAX_LEDGER_ENTRY_KEYS: usize = 200;

/// What the handler shares.
pub struct ServerState {
    pub passphrase: String,
    pub commands: Mutex<Sender<Command>>,
    pub faults: Mutex<HashMap<String, VecDeque<Fault>>>,
}

type Answer = Result<Value, RpcError>;

fn error(code: i64, message: impl Into<String>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
    }
}

fn internal() -> RpcError {
    error(code::INTERNAL_ERROR, "the local network is shutting down")
}

pub async fn handle(State(state): State<Arc<ServerState>>, body: Bytes) -> impl IntoResponse {
    let (id, answer, delay) = match serde_json::from_slice::<Value>(&body) {
        Err(e) => (
            Value::Null,
            Err(error(code::PARSE_ERROR, format!("parse error: {e}"))),
            None,
        ),
        Ok(request) => dispatch(&state, request).await,
    };
    let response = match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e}),
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    ([(CONTENT_TYPE, "application/json")], response.to_string())
}

async fn dispatch(
    state: &ServerState,
    request: Value,
) -> (Value, Answer, Option<std::time::Duration>) {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let valid_id = matches!(id, Value::Null | Value::Number(_) | Value::String(_));
    let (Some(method), Some("2.0"), true) = (
        request.get("method").and_then(Value::as_str),
        request.get("jsonrpc").and_then(Value::as_str),
        valid_id && request.is_object(),
    ) else {
        return (
            id,
            Err(error(code::INVALID_REQUEST, "invalid JSON-RPC 2.0 request")),
            None,
        );
    };
    let params = request.get("params").cloned().unwrap_or(Value::Null);
    tracing::debug!(method, "local network call");
    let fault = state
        .faults
        .lock()
        .ok()
        .and_then(|mut f| f.get_mut(method).and_then(VecDeque::pop_front));
    let delay = match fault {
        Some(Fault::Delay(delay)) => Some(delay),
        Some(fault @ (Fault::TryAgainLater | Fault::Error)) if method == rpc::SEND_TRANSACTION => {
            return (id, injected_send(state, params, fault).await, None);
        }
        Some(_) => {
            return (
                id,
                Err(error(code::INTERNAL_ERROR, "injected failure")),
                None,
            );
        }
        None => None,
    };
    (id, serve(state, method, params).await, delay)
}

fn parse<P: DeserializeOwned>(params: Value) -> Result<P, RpcError> {
    serde_json::from_value(params)
        .map_err(|e| error(code::INVALID_PARAMS, format!("invalid params: {e}")))
}

fn decode_envelope(params: Value) -> Result<TransactionEnvelope, RpcError> {
    let params: TransactionParams = parse(params)?;
    TransactionEnvelope::from_xdr_base64(&params.transaction, Limits::len(super::MAX_XDR_BYTES))
        .map_err(|e| {
            error(
                code::INVALID_PARAMS,
                format!("invalid transaction envelope XDR: {e}"),
            )
        })
}

async fn ask<T>(
    state: &ServerState,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, RpcError> {
    let (tx, rx) = oneshot::channel();
    state
        .commands
        .lock()
        .map_err(|_| internal())?
        .send(command(tx))
        .map_err(|_| internal())?;
    rx.await.map_err(|_| internal())
}

fn to_value<T: serde::Serialize>(value: T) -> Answer {
    serde_json::to_value(value).map_err(|e| error(code::INTERNAL_ERROR, e.to_string()))
}

async fn serve(state: &ServerState, method: &str, params: Value) -> Answer {
    match method {
        rpc::GET_NETWORK => to_value(GetNetworkResult {
            passphrase: state.passphrase.clone(),
            protocol_version: PROTOCOL_VERSION,
            friendbot_url: None,
        }),
        rpc::GET_LATEST_LEDGER => {
            let latest = ask(state, Command::Latest).await?;
            to_value(GetLatestLedgerResult {
                id: hex::encode(latest.hash),
                protocol_version: PROTOCOL_VERSION,
                sequence: latest.sequence,
            })
        }
        rpc::GET_LEDGER_ENTRIES => {
            let params: GetLedgerEntriesParams = parse(params)?;
            if params.keys.len() > MAX_LEDGER_ENTRY_KEYS {
                return Err(error(
                    code::INVALID_PARAMS,
                    format!(
                        "key count ({}) exceeds maximum supported ({MAX_LEDGER_ENTRY_KEYS})",
                        params.keys.len()
                    ),
                ));
            }
            let keys = params
                .keys
                .iter()
                .map(|k| {
                    LedgerKey::from_xdr_base64(k, Limits::len(super::MAX_XDR_BYTES)).map_err(|e| {
                        error(
                            code::INVALID_PARAMS,
                            format!("cannot unmarshal key value {k}: {e}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let (found, latest) = ask(state, |tx| Command::Entries(keys, tx)).await?;
            let entries = found
                .into_iter()
                .map(|(key, stored)| {
                    Ok(LedgerEntryResult {
                        key: key.to_xdr_base64(Limits::none())?,
                        xdr: stored.entry.data.to_xdr_base64(Limits::none())?,
                        last_modified_ledger_seq: stored.entry.last_modified_ledger_seq,
                        live_until_ledger_seq: stored.live_until,
                    })
                })
                .collect::<Result<Vec<_>, soroban_env_host::xdr::Error>>()
                .map_err(|e| error(code::INTERNAL_ERROR, e.to_string()))?;
            to_value(GetLedgerEntriesResult {
                entries,
                latest_ledger: latest.sequence,
            })
        }
        rpc::SIMULATE_TRANSACTION => {
            let envelope = decode_envelope(params)?;
            to_value(ask(state, |tx| Command::Simulate(Box::new(envelope), tx)).await?)
        }
        rpc::SEND_TRANSACTION => {
            let envelope = decode_envelope(params)?;
            to_value(ask(state, |tx| Command::Send(Box::new(envelope), tx)).await?)
        }
        rpc::GET_TRANSACTION => {
            let params: GetTransactionParams = parse(params)?;
            let hash: [u8; 32] = hex::decode(&params.hash)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| error(code::INVALID_PARAMS, "hash must be 64 hex characters"))?;
            let (found, latest) = ask(state, |tx| Command::Transaction(hash, tx)).await?;
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD;
            let mut result = GetTransactionResult {
                status: TransactionStatus::NotFound,
                latest_ledger: latest.sequence,
                latest_ledger_close_time: latest.close_time.to_string(),
                oldest_ledger: latest.oldest,
                oldest_ledger_close_time: latest.oldest_close_time.to_string(),
                ledger: None,
                created_at: None,
                application_order: None,
                envelope_xdr: None,
                result_xdr: None,
                result_meta_xdr: None,
            };
            if let Some(t) = found {
                result.status = if t.success {
                    TransactionStatus::Success
                } else {
                    TransactionStatus::Failed
                };
                result.ledger = Some(t.ledger);
                result.created_at = Some(t.created_at.to_string());
                result.application_order = Some(t.application_order);
                result.envelope_xdr = Some(
                    t.envelope
                        .to_xdr_base64(Limits::none())
                        .map_err(|e| error(code::INTERNAL_ERROR, e.to_string()))?,
                );
                result.result_xdr = Some(b64.encode(&t.result));
                result.result_meta_xdr = Some(b64.encode(&t.meta));
            }
            to_value(result)
        }
        other => Err(error(
            code::METHOD_NOT_FOUND,
            format!("method not found: {other}"),
        )),
    }
}

/// `sendTransaction` under an injected TRY_AGAIN_LATER or ERROR: the
/// request is decoded as usual but nothing is queued.
async fn injected_send(state: &ServerState, params: Value, fault: Fault) -> Answer {
    let envelope = decode_envelope(params)?;
    let hash = match &envelope {
        TransactionEnvelope::Tx(v1) => {
            transaction_hash(&v1.tx, &state.passphrase).unwrap_or_default()
        }
        _ => [0; 32],
    };
    let latest = ask(state, Command::Latest).await?;
    let (status, error_result_xdr) = match fault {
        Fault::Error => (
            SendStatus::Error,
            Some(error_result_xdr(TransactionResultResult::TxInternalError)),
        ),
        _ => (SendStatus::TryAgainLater, None),
    };
    to_value(SendTransactionResult {
        status,
        hash: hex::encode(hash),
        latest_ledger: latest.sequence,
        latest_ledger_close_time: latest.close_time.to_string(),
        error_result_xdr,
    })
}

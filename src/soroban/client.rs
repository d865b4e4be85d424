//! A Soroban RPC client: typed calls of the methods in [`rpc`](super::rpc)
//! over HTTP(S), each bounded by a request timeout.
//!
//! Errors keep apart what the caller must treat differently: a transport
//! failure (timeout, refused connection) says nothing about whether the
//! server acted, while an RPC error object says it refused.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use stellar_xdr::{LedgerEntryData, LedgerKey, Limits, ReadXdr, TransactionEnvelope, WriteXdr};

use super::rpc::{self, RpcError};

/// Why a call did not return a result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer, or not an HTTP 200 one: the server may or may not have
    /// acted on the request.
    #[error("Soroban RPC unreachable: {0}")]
    Transport(String),
    /// The server answered with a JSON-RPC error object.
    #[error("Soroban RPC refused {method}: {error}")]
    Rpc {
        method: &'static str,
        error: RpcError,
    },
    /// The answer is not what the protocol says.
    #[error("Soroban RPC answered {method} with something unreadable: {detail}")]
    Malformed {
        method: &'static str,
        detail: String,
    },
}

impl ClientError {
    fn malformed(method: &'static str, detail: impl ToString) -> Self {
        Self::Malformed {
            method,
            detail: detail.to_string(),
        }
    }
}

/// A Soroban RPC endpoint.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: Arc<str>,
}

impl Client {
    /// A client of `url` whose calls give up after `timeout`. HTTPS uses the
    /// platform's root certificates.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        // Certificates the platform cannot parse are skipped; an endpoint
        // signed by none of the rest fails on its first call, by name.
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Transport(format!("TLS set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .build()
            .map_err(|e| ClientError::Transport(format!("HTTP client set-up: {e}")))?;
        Ok(Self {
            http,
            url: url.into(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &'static str,
        params: P,
    ) -> Result<R, ClientError> {
        let request = rpc::Request {
            jsonrpc: "2.0".to_owned(),
            id: 1.into(),
            method: method.to_owned(),
            params,
        };
        let response = self
            .http
            .post(&*self.url)
            .json(&request)
            .send()
            .await
            .map_err(|e| ClientError::Transport(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(ClientError::Transport(format!("{method}: HTTP {status}")));
        }
        let body: rpc::Response<R> = response
            .json()
            .await
            .map_err(|e| ClientError::malformed(method, describe(&e)))?;
        match (body.result, body.error) {
            (_, Some(error)) => Err(ClientError::Rpc { method, error }),
            (Some(result), None) => Ok(result),
            (None, None) => Err(ClientError::malformed(method, "neither result nor error")),
        }
    }

    pub async fn get_network(&self) -> Result<rpc::GetNetworkResult, ClientError> {
        self.call(rpc::GET_NETWORK, serde_json::Map::new()).await
    }

    /// The current data of each of `keys` that exists, in the order asked.
    pub async fn get_ledger_entries(
        &self,
        keys: &[LedgerKey],
    ) -> Result<Vec<Option<LedgerEntryData>>, ClientError> {
        const METHOD: &str = rpc::GET_LEDGER_ENTRIES;
        let encoded = keys
            .iter()
            .map(|key| key.to_xdr_base64(Limits::none()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::malformed(METHOD, e))?;
        let result: rpc::GetLedgerEntriesResult = self
            .call(
                METHOD,
                rpc::GetLedgerEntriesParams {
                    keys: encoded.clone(),
                },
            )
            .await?;
        let mut found = vec![None; keys.len()];
        for entry in result.entries {
            let Some(index) = encoded.iter().position(|k| *k == entry.key) else {
                return Err(ClientError::malformed(
                    METHOD,
                    "an entry for a key not asked for",
                ));
            };
            let data = LedgerEntryData::from_xdr_base64(&entry.xdr, Limits::none())
                .map_err(|e| ClientError::malformed(METHOD, e))?;
            found[index] = Some(data);
        }
        Ok(found)
    }

    pub async fn simulate_transaction(
        &self,
        envelope: &TransactionEnvelope,
    ) -> Result<rpc::SimulateTransactionResult, ClientError> {
        self.call(
            rpc::SIMULATE_TRANSACTION,
            params(rpc::SIMULATE_TRANSACTION, envelope)?,
        )
        .await
    }

    pub async fn send_transaction(
        &self,
        envelope: &TransactionEnvelope,
    ) -> Result<rpc::SendTransactionResult, ClientError> {
        self.call(
            rpc::SEND_TRANSACTION,
            params(rpc::SEND_TRANSACTION, envelope)?,
        )
        .await
    }

    pub async fn get_transaction(
        &self,
        hash: &[u8; 32],
    ) -> Result<rpc::GetTransactionResult, ClientError> {
        self.call(
            rpc::GET_TRANSACTION,
            rpc::GetTransactionParams {
                hash: hex::encode(hash),
            },
        )
        .await
    }
}

fn params(
    method: &'static str,
    envelope: &TransactionEnvelope,
) -> Result<rpc::TransactionParams, ClientError> {
    Ok(rpc::TransactionParams {
        transaction: envelope
            .to_xdr_base64(Limits::none())
            .map_err(|e| ClientError::malformed(method, e))?,
    })
}

/// What failed, with the error's sources (refused, TLS, ...), but not the
/// URL, whose query may carry an API key.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

//! [`ChainError`]: everything that can go wrong talking to the chain, classified once into transient (retry with
//! back-off) and permanent (stop, show an operator). The mapping from alloy's errors lives here and nowhere else.

use std::time::Duration;

use alloy::{
    contract::Error as ContractError,
    primitives::TxHash,
    providers::PendingTransactionError,
    sol_types::{Revert, SolError},
    transports::{http::reqwest, RpcError, TransportError, TransportErrorKind},
};

use crate::key::KeyError;

/// The revert reason of `endSession` when the tutor has no active session (same text in the public LangDAO
/// contract): the session was ended by someone else, which is an outcome, not a failure.
pub const NOT_ACTIVE_REASON: &str = "Session not active";

/// Whether an error is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// May succeed later with no change to code or configuration: retry with back-off.
    Transient,
    /// Will fail the same way every time: stop and make it visible.
    Permanent,
}

/// A failure of a chain operation. Variants document their class; [`ChainError::class`] is the source of truth.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Transient. The RPC endpoint could not be reached or failed at the HTTP level (connection refused or
    /// reset, 5xx, 429, an empty answer).
    #[error("RPC endpoint unreachable: {0}")]
    Unreachable(String),
    /// Transient. An RPC call did not answer within the configured timeout.
    #[error("RPC call {call} timed out after {after:?}")]
    Timeout {
        /// The operation that timed out.
        call: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// Transient. The transaction was sent but no receipt arrived in time; it may still be mined, so a retry
    /// looks this hash up before sending anything.
    #[error("no receipt for transaction {tx_hash} after {after:?}")]
    ReceiptTimeout {
        /// The transaction that was sent.
        tx_hash: TxHash,
        /// The receipt timeout that elapsed.
        after: Duration,
    },
    /// Transient. The node refused the transaction for its nonce or fee (nonce too low/high, replacement
    /// underpriced, fee below the base fee, already known); the next attempt fetches both afresh.
    #[error("transaction refused for its nonce or fee: {0}")]
    NonceOrFee(String),
    /// Transient, but needs an operator: the backend wallet cannot pay for gas. Fund it.
    #[error("the backend wallet cannot pay for gas: {0}")]
    InsufficientFunds(String),
    /// Transient. The node answered with another JSON-RPC error (rate limit, "header not found", internal).
    #[error("RPC error {code}: {message}")]
    Node {
        /// The JSON-RPC error code.
        code: i64,
        /// The node's message.
        message: String,
    },
    /// Permanent. The call reverts for a reason other than [`NOT_ACTIVE_REASON`], e.g. the backend wallet is
    /// not the contract's owner ("Caller is not the student, tutor nor owner").
    #[error("the contract call reverts: {reason}")]
    Reverted {
        /// The decoded `Error(string)` reason, or the node's message when there is none.
        reason: String,
    },
    /// Permanent. The transaction was mined but failed while the session stayed active.
    #[error("transaction {tx_hash} failed on chain and the session is still active")]
    FailedOnChain {
        /// The failed transaction.
        tx_hash: TxHash,
    },
    /// Permanent. The transaction succeeded but its receipt has no `SessionEnded` event from the contract.
    #[error("transaction {tx_hash} succeeded without a SessionEnded event from the contract")]
    MissingEvent {
        /// The transaction.
        tx_hash: TxHash,
    },
    /// Permanent. An answer did not decode as the LangDAO ABI or as JSON-RPC: a wrong contract address or a
    /// wrong RPC URL.
    #[error("unexpected answer from the chain: {0}")]
    BadResponse(String),
    /// Permanent. The backend wallet key is missing or malformed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Permanent. Local misconfiguration or misuse: an invalid RPC URL, a request the node does not support,
    /// a signing failure.
    #[error("configuration: {0}")]
    Config(String),
}

impl ChainError {
    /// Transient or permanent; see each variant.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Unreachable(_)
            | Self::Timeout { .. }
            | Self::ReceiptTimeout { .. }
            | Self::NonceOrFee(_)
            | Self::InsufficientFunds(_)
            | Self::Node { .. } => ErrorClass::Transient,
            Self::Reverted { .. }
            | Self::FailedOnChain { .. }
            | Self::MissingEvent { .. }
            | Self::BadResponse(_)
            | Self::Key(_)
            | Self::Config(_) => ErrorClass::Permanent,
        }
    }

    /// `class() == Transient`.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The revert reason if this is a revert.
    pub fn revert_reason(&self) -> Option<&str> {
        match self {
            Self::Reverted { reason } => Some(reason),
            _ => None,
        }
    }

    /// Whether this is the contract saying the tutor has no active session.
    pub(crate) fn is_not_active(&self) -> bool {
        self.revert_reason()
            .is_some_and(|r| r.contains(NOT_ACTIVE_REASON))
    }
}

/// Messages with which nodes (geth, reth, anvil, erigon, nethermind) refuse a transaction for its nonce or fee.
const NONCE_OR_FEE_MESSAGES: &[&str] = &[
    "nonce too low",
    "nonce too high",
    "underpriced",
    "already known",
    "less than block base fee",
    "fee cap",
    "max fee per gas",
    "invalid nonce",
];

impl From<TransportError> for ChainError {
    fn from(err: TransportError) -> Self {
        match &err {
            RpcError::ErrorResp(payload) => {
                if let Some(data) = payload.as_revert_data() {
                    let reason = Revert::abi_decode(&data)
                        .map(|r| r.reason)
                        .unwrap_or_else(|_| format!("{} (revert data {data})", payload.message));
                    return Self::Reverted { reason };
                }
                let message = payload.message.to_string();
                let lower = message.to_ascii_lowercase();
                if lower.contains("insufficient funds") {
                    Self::InsufficientFunds(message)
                } else if NONCE_OR_FEE_MESSAGES.iter().any(|m| lower.contains(m)) {
                    Self::NonceOrFee(message)
                } else if lower.contains("revert") {
                    Self::Reverted { reason: message }
                } else {
                    Self::Node {
                        code: payload.code,
                        message,
                    }
                }
            }
            RpcError::Transport(kind) => match kind {
                TransportErrorKind::HttpError(http)
                    if !(http.is_rate_limit_err()
                        || http.is_temporarily_unavailable()
                        || http.status >= 500) =>
                {
                    Self::Config(format!("RPC endpoint answered HTTP {}", http.status))
                }
                _ => Self::Unreachable(describe_transport(kind)),
            },
            RpcError::NullResp => Self::Unreachable("the node returned an empty response".into()),
            RpcError::DeserError { .. } => Self::BadResponse(err.to_string()),
            RpcError::SerError(_)
            | RpcError::UnsupportedFeature(_)
            | RpcError::LocalUsageError(_) => Self::Config(err.to_string()),
        }
    }
}

/// A transport failure as text: the error and its causes, with the request URL cut down to scheme, host and
/// port (an RPC URL may carry an API key in its path or query, and this text ends up in logs and the outbox).
fn describe_transport(kind: &TransportErrorKind) -> String {
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(kind);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    if let TransportErrorKind::Custom(inner) = kind {
        if let Some(url) = inner.downcast_ref::<reqwest::Error>().and_then(|e| e.url()) {
            text = text.replace(url.as_str(), &redact_url(url));
        }
    }
    text
}

/// `scheme://host:port/…`: enough to tell endpoints apart, nothing secret.
pub(crate) fn redact_url(url: &reqwest::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = if url.path() == "/" && url.query().is_none() {
        "/"
    } else {
        "/…"
    };
    format!(
        "{}://{}{port}{rest}",
        url.scheme(),
        url.host_str().unwrap_or("")
    )
}

impl From<ContractError> for ChainError {
    fn from(err: ContractError) -> Self {
        match err {
            ContractError::TransportError(e) => e.into(),
            ContractError::PendingTransactionError(e) => e.into(),
            ContractError::ZeroData(..) | ContractError::AbiError(_) => {
                Self::BadResponse(err.to_string())
            }
            other => Self::Config(other.to_string()),
        }
    }
}

impl From<PendingTransactionError> for ChainError {
    fn from(err: PendingTransactionError) -> Self {
        match err {
            PendingTransactionError::TransportError(e) => e.into(),
            other => Self::Unreachable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_error(code: i64, message: &str, data: Option<&str>) -> TransportError {
        let json = match data {
            Some(d) => format!(r#"{{"code":{code},"message":"{message}","data":"{d}"}}"#),
            None => format!(r#"{{"code":{code},"message":"{message}"}}"#),
        };
        // The payload type is inferred: alloy-json-rpc is not a direct dependency.
        RpcError::ErrorResp(serde_json::from_str(&json).unwrap())
    }

    #[test]
    fn a_revert_with_a_reason_decodes_the_reason_and_is_permanent() {
        let data = alloy::primitives::hex::encode_prefixed(
            Revert::from("Caller is not the student, tutor nor owner").abi_encode(),
        );
        let err: ChainError = node_error(3, "execution reverted", Some(&data)).into();
        assert_eq!(
            err.revert_reason(),
            Some("Caller is not the student, tutor nor owner")
        );
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert!(!err.is_not_active());
        let data =
            alloy::primitives::hex::encode_prefixed(Revert::from(NOT_ACTIVE_REASON).abi_encode());
        let err: ChainError = node_error(3, "execution reverted", Some(&data)).into();
        assert!(err.is_not_active());
    }

    #[test]
    fn nonce_fee_and_funding_refusals_are_transient() {
        for msg in [
            "nonce too low",
            "replacement transaction underpriced",
            "max fee per gas less than block base fee",
        ] {
            let err: ChainError = node_error(-32000, msg, None).into();
            assert!(matches!(err, ChainError::NonceOrFee(_)), "{msg}: {err:?}");
            assert!(err.is_transient());
        }
        let err: ChainError =
            node_error(-32000, "insufficient funds for gas * price + value", None).into();
        assert!(matches!(err, ChainError::InsufficientFunds(_)) && err.is_transient());
        let err: ChainError = node_error(-32005, "limit exceeded", None).into();
        assert!(matches!(err, ChainError::Node { code: -32005, .. }) && err.is_transient());
    }

    #[test]
    fn http_failures_split_into_outage_and_misconfiguration() {
        let err: ChainError = TransportErrorKind::http_error(503, String::new()).into();
        assert!(err.is_transient());
        let err: ChainError = TransportErrorKind::http_error(429, String::new()).into();
        assert!(err.is_transient());
        let err: ChainError = TransportErrorKind::http_error(401, "no api key".into()).into();
        assert_eq!(err.class(), ErrorClass::Permanent);
        let err: ChainError = TransportErrorKind::custom_str("connection refused").into();
        assert!(matches!(err, ChainError::Unreachable(_)) && err.is_transient());
    }
}

//! [`ChainClient`]: the backend wallet's view of one LangDAO contract. It reads a tutor's active session and ends
//! it with `endSession(tutor)`: check the chain, dry-run with `eth_call`, sign locally
//! ([`ChainClient::sign_end_session`]), broadcast the raw transaction ([`ChainClient::broadcast`]), wait for the
//! receipt, decode `SessionEnded`. Signing and broadcasting are separate so the caller can store the signed
//! transaction in between: a retry then rebroadcasts the very same transaction (same hash, same nonce) instead of
//! building a second one, and a second `endSession` is only signed once the first is proven dead
//! ([`ChainClient::stored_tx_status`]).
//!
//! Exactly-once payment rests on the contract: `endSession` reverts once the session is no longer active, so a
//! repeated send cannot pay twice. The client's job is not to waste gas on such repeats and to report what
//! happened: [`EndOutcome::AlreadyEnded`] when the chain shows the session over (ended by the student, the tutor,
//! or our own earlier transaction) without sending anything.

use std::{fmt, future::Future, time::Duration};

use alloy::{
    network::{
        eip2718::Encodable2718, EthereumWallet, NetworkTransactionBuilder, TransactionBuilder,
    },
    primitives::{keccak256, Address, Bytes, TxHash, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    sol_types::SolEvent,
    transports::http::reqwest,
};
use tracing::{debug, info, warn};

use crate::{
    bindings::LangDAO,
    error::{redact_url, ChainError},
    key::WalletKey,
};

/// Where the contract is and how long to wait for it. `Debug` shows the RPC URL without path or query.
#[derive(Clone)]
pub struct ChainConfig {
    /// JSON-RPC endpoint, `http://` or `https://` (certificate checked against the system's trust
    /// roots). Never logged: it may carry an API key.
    pub rpc_url: String,
    /// The LangDAO contract.
    pub contract: Address,
    /// Upper bound of every single RPC call.
    pub rpc_timeout: Duration,
    /// How long [`ChainClient::end_session`] waits for the receipt after sending.
    pub receipt_timeout: Duration,
    /// Delay between two receipt look-ups while waiting.
    pub receipt_poll: Duration,
}

impl ChainConfig {
    /// Defaults for a public chain: 10 s per call, 3 min for a receipt, polled every 2 s.
    pub fn new(rpc_url: impl Into<String>, contract: Address) -> Self {
        Self {
            rpc_url: rpc_url.into(),
            contract,
            rpc_timeout: Duration::from_secs(10),
            receipt_timeout: Duration::from_secs(180),
            receipt_poll: Duration::from_secs(2),
        }
    }
}

impl fmt::Debug for ChainConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = match self.rpc_url.parse::<reqwest::Url>() {
            Ok(url) => redact_url(&url),
            Err(_) => "<invalid URL>".to_owned(),
        };
        f.debug_struct("ChainConfig")
            .field("rpc_url", &url)
            .field("contract", &self.contract)
            .field("rpc_timeout", &self.rpc_timeout)
            .field("receipt_timeout", &self.receipt_timeout)
            .field("receipt_poll", &self.receipt_poll)
            .finish()
    }
}

/// A tutor's session as the contract holds it while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSession {
    /// The contract's session id (from 1).
    pub session_id: U256,
    /// Who pays.
    pub student: Address,
    /// Block timestamp at `startSession`, unix seconds.
    pub start_time: u64,
    /// Token units (wei of the token) per second.
    pub rate_per_second: U256,
    /// The contract's language id.
    pub language: u8,
}

/// A session that has ended on chain, as `sessionHistory` records it (whoever ended it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    /// The contract's session id.
    pub session_id: U256,
    /// Billed seconds (`endTime - startTime`).
    pub duration_s: u64,
    /// Token units paid to the tutor.
    pub total_paid: U256,
    /// Block timestamp of the end, unix seconds.
    pub ended_at: u64,
}

/// Our `endSession` transaction, mined and successful.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The transaction.
    pub tx_hash: TxHash,
    /// The block it was mined in.
    pub block: u64,
    /// Gas used by the transaction.
    pub gas_used: u64,
    /// Price paid per gas unit, wei.
    pub effective_gas_price_wei: u128,
    /// From `SessionEnded`: the contract's session id.
    pub session_id: U256,
    /// From `SessionEnded`: billed seconds.
    pub duration_s: u64,
    /// From `SessionEnded`: token units paid to the tutor.
    pub total_paid: U256,
}

/// How an attempt to end a session came out (failures are [`ChainError`]s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOutcome {
    /// Our transaction ended the session.
    Settled(Settled),
    /// The chain shows the session already over: nothing was sent (or our transaction lost a race and
    /// reverted). `ended` is the on-chain record when the expected session id was known.
    AlreadyEnded {
        /// `sessionHistory(expected id)` once ended; `None` without an expected id.
        ended: Option<EndedSession>,
    },
}

/// The result of the sending half of [`ChainClient::end_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// The transaction was accepted by the node: persist the hash before waiting for the receipt.
    Sent(TxHash),
    /// Nothing was sent: the session is already over.
    AlreadyEnded {
        /// As in [`EndOutcome::AlreadyEnded`].
        ended: Option<EndedSession>,
    },
}

/// An `endSession` transaction signed locally by the backend wallet: what the outbox stores before the first
/// broadcast and rebroadcasts unchanged on every retry.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// `keccak256(raw)`: the transaction hash.
    pub hash: TxHash,
    /// The wallet nonce it uses; only one transaction per nonce can ever be mined.
    pub nonce: u64,
    /// The EIP-2718 envelope, as sent with `eth_sendRawTransaction`.
    pub raw: Bytes,
}

impl SignedTx {
    /// Rebuild from stored columns (`0x` hex of the envelope, the nonce, the hash). Fails with a description when
    /// the hex does not decode or does not hash to `hash` (a corrupt row).
    pub fn from_stored(hash: TxHash, nonce: u64, raw_hex: &str) -> Result<Self, String> {
        let raw: Bytes = raw_hex
            .parse()
            .map_err(|e| format!("raw transaction is not hex: {e}"))?;
        if keccak256(&raw) != hash {
            return Err(format!("raw transaction does not hash to {hash}"));
        }
        Ok(Self { hash, nonce, raw })
    }

    /// The envelope as `0x`-prefixed hex (the `raw_tx` column).
    pub fn raw_hex(&self) -> String {
        alloy::primitives::hex::encode_prefixed(&self.raw)
    }
}

impl fmt::Debug for SignedTx {
    /// Hash and nonce; the raw bytes are long and say nothing to a reader.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedTx")
            .field("hash", &self.hash)
            .field("nonce", &self.nonce)
            .field("raw_len", &self.raw.len())
            .finish()
    }
}

/// The result of [`ChainClient::sign_end_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// The chain checks passed and the transaction is signed (nothing broadcast yet): store it, then broadcast.
    Signed(SignedTx),
    /// Nothing was signed: the session is already over.
    AlreadyEnded {
        /// As in [`EndOutcome::AlreadyEnded`].
        ended: Option<EndedSession>,
    },
}

/// The answer to [`ChainClient::broadcast`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broadcast {
    /// The node has the transaction: it accepted it now, already knew it, or it is mined. Wait for the receipt.
    Accepted,
    /// The transaction can never be mined: its nonce was used by another transaction and there is no receipt
    /// for it. Only now may a new `endSession` be signed.
    Dead,
}

/// Where a stored transaction stands on chain ([`ChainClient::stored_tx_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// It has a receipt.
    Mined,
    /// No receipt and its nonce is used by another mined transaction: it can never be mined.
    Dead,
    /// No receipt and its nonce is still free: it may yet be mined (pending, or not known to this node).
    Open,
}

/// The wallet that signs `endSession` locally; `Debug` shows nothing of it.
#[derive(Clone)]
struct LocalWallet(EthereumWallet);

impl fmt::Debug for LocalWallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalWallet(<redacted>)")
    }
}

/// Safety margin on the node's gas estimate, percent: the block that mines the transaction differs from the one
/// it was estimated on (later timestamp, another amount). Unused gas is not paid for.
const GAS_MARGIN_PERCENT: u64 = 20;

/// Gas added to every estimate on top of the margin. An estimate made in the second the session started sees
/// nothing to pay (duration 0): no token transfer, no earnings write; the block that mines it pays the tutor,
/// which costs up to two fresh storage slots (≈ 2 × 22k) and the transfer. Found by a test that mined later.
const GAS_HEADROOM: u64 = 60_000;

/// The backend wallet's client for one LangDAO contract. Build once, share by reference.
#[derive(Debug, Clone)]
pub struct ChainClient {
    /// The one provider: HTTP transport, gas estimation, nonce from the node, chain id, the wallet.
    provider: DynProvider,
    /// The same wallet, for signing `endSession` locally before it is broadcast.
    signer: LocalWallet,
    /// The contract bound to `provider`.
    contract: LangDAO::LangDAOInstance<DynProvider>,
    /// The backend wallet's address (the contract's `owner` in production).
    wallet: Address,
    /// Timeouts and addresses.
    config: ChainConfig,
}

impl ChainClient {
    /// Build the client. Performs no network I/O: an unreachable node shows up on the first call.
    /// Fails with [`ChainError::Key`] for a bad key and [`ChainError::Config`] for an invalid RPC URL or one
    /// neither `http://` nor `https://`.
    ///
    /// The nonce is asked from the node (`pending`) for every transaction rather than cached, so a send that
    /// failed half-way cannot leave a stale nonce behind; this is safe because one task sends per wallet.
    pub fn new(config: ChainConfig, key: &WalletKey) -> Result<Self, ChainError> {
        let signer = key.signer()?;
        let wallet = signer.address();
        let url: reqwest::Url = config
            .rpc_url
            .parse()
            .map_err(|e| ChainError::Config(format!("invalid RPC URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            // Caught here, not at the first request: it would look like an outage and be retried for an hour.
            return Err(ChainError::Config(format!(
                "RPC URL scheme {:?} is not supported: http:// or https:// only",
                url.scheme()
            )));
        }
        confab_store::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(config.rpc_timeout)
            .connect_timeout(config.rpc_timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| ChainError::Config(format!("HTTP client: {e}")))?;
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer.clone()))
            .connect_reqwest(http, url)
            .erased();
        let contract = LangDAO::new(config.contract, provider.clone());
        Ok(Self {
            provider,
            signer: LocalWallet(EthereumWallet::from(signer)),
            contract,
            wallet,
            config,
        })
    }

    /// The backend wallet's address.
    pub fn wallet_address(&self) -> Address {
        self.wallet
    }

    /// The contract's address.
    pub fn contract_address(&self) -> Address {
        self.config.contract
    }

    /// The shared provider (signing with the backend wallet), e.g. for balance checks.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The chain's id (`eth_chainId`, EIP-695), e.g. 31337 for anvil. Errors: the node's, or a
    /// timeout.
    pub async fn chain_id(&self) -> Result<u64, ChainError> {
        self.within("eth_chainId", self.provider.get_chain_id())
            .await
    }

    /// Whether the backend wallet is the contract's `owner`, the only non-party allowed to end sessions.
    /// Check at start-up: if not, every settlement fails with a permanent revert.
    pub async fn wallet_is_owner(&self) -> Result<bool, ChainError> {
        let owner = self
            .within("owner", async { self.contract.owner().call().await })
            .await?;
        Ok(owner == self.wallet)
    }

    /// The backend wallet's ether balance, wei (it pays the gas; worth a health check).
    pub async fn wallet_balance_wei(&self) -> Result<U256, ChainError> {
        self.within("eth_getBalance", async {
            self.provider.get_balance(self.wallet).await
        })
        .await
    }

    /// The tutor's active session, or `None` when the tutor has none.
    pub async fn active_session(
        &self,
        tutor: Address,
    ) -> Result<Option<ActiveSession>, ChainError> {
        let s = self
            .within("activeSessions", async {
                self.contract.activeSessions(tutor).call().await
            })
            .await?;
        Ok(s.isActive.then(|| ActiveSession {
            session_id: s.id,
            student: s.student,
            start_time: s.startTime.saturating_to(),
            rate_per_second: s.ratePerSecond,
            language: s.language,
        }))
    }

    /// Session `session_id` if it has ended, from `sessionHistory`; `None` while active or unknown.
    pub async fn ended_session(
        &self,
        session_id: U256,
    ) -> Result<Option<EndedSession>, ChainError> {
        let s = self
            .within("sessionHistory", async {
                self.contract.sessionHistory(session_id).call().await
            })
            .await?;
        let ended = !session_id.is_zero() && s.id == session_id && !s.isActive;
        Ok(ended.then(|| EndedSession {
            session_id,
            duration_s: s.endTime.saturating_sub(s.startTime).saturating_to(),
            total_paid: s.totalPaid,
            ended_at: s.endTime.saturating_to(),
        }))
    }

    /// End the tutor's session and wait for the outcome: [`submit_end_session`](Self::submit_end_session) then
    /// [`wait_for_settlement`](Self::wait_for_settlement).
    ///
    /// `expected` is the session id this settlement is for: when the tutor's active session has another id,
    /// ours is over and a newer one must not be ended. (The contract's `endSession` takes no id, so a session
    /// started between our check and the block that mines our transaction would be ended; the window is one
    /// block and requires our session to have been ended by someone else first.)
    pub async fn end_session(
        &self,
        tutor: Address,
        expected: Option<U256>,
    ) -> Result<EndOutcome, ChainError> {
        match self.submit_end_session(tutor, expected).await? {
            Submission::AlreadyEnded { ended } => Ok(EndOutcome::AlreadyEnded { ended }),
            Submission::Sent(tx_hash) => self.wait_for_settlement(tx_hash, tutor, expected).await,
        }
    }

    /// [`sign_end_session`](Self::sign_end_session) then [`broadcast`](Self::broadcast), without storing the
    /// signed transaction in between (the worker stores it; this is for callers without an outbox).
    pub async fn submit_end_session(
        &self,
        tutor: Address,
        expected: Option<U256>,
    ) -> Result<Submission, ChainError> {
        let signed = match self.sign_end_session(tutor, expected).await? {
            Signing::AlreadyEnded { ended } => return Ok(Submission::AlreadyEnded { ended }),
            Signing::Signed(signed) => signed,
        };
        match self.broadcast(&signed).await? {
            Broadcast::Accepted => Ok(Submission::Sent(signed.hash)),
            Broadcast::Dead => Err(ChainError::NonceOrFee(format!(
                "nonce {} was taken by another transaction of the wallet while sending",
                signed.nonce
            ))),
        }
    }

    /// Check the chain (`activeSessions(tutor)`), dry-run `endSession(tutor)` with `eth_call` from the backend
    /// wallet, then build the transaction with the node's gas estimate (plus a margin), EIP-1559 fees, the
    /// wallet's `pending` nonce and the chain id, and sign it locally. Broadcasts nothing: store the result, then
    /// call [`broadcast`](Self::broadcast). [`Signing::AlreadyEnded`] when the session is over.
    ///
    /// Errors: RPC failures as classified by [`ChainError`]; a signing failure is [`ChainError::Config`].
    pub async fn sign_end_session(
        &self,
        tutor: Address,
        expected: Option<U256>,
    ) -> Result<Signing, ChainError> {
        let active = self.active_session(tutor).await?;
        if !is_ours(&active, expected) {
            debug!(%tutor, ?expected, "no active session to end");
            return Ok(Signing::AlreadyEnded {
                ended: self.record_of(expected).await?,
            });
        }

        let dry_run = self
            .within("eth_call endSession", async {
                self.contract
                    .endSession(tutor)
                    .from(self.wallet)
                    .call()
                    .await
            })
            .await;
        match dry_run {
            Ok(_) => {}
            Err(e) if e.is_not_active() => {
                return Ok(Signing::AlreadyEnded {
                    ended: self.record_of(expected).await?,
                })
            }
            Err(e) => return Err(e),
        }

        let request = self
            .contract
            .endSession(tutor)
            .from(self.wallet)
            .into_transaction_request();
        // Gas estimation is a second dry run: the session may have ended in between.
        let gas = match self
            .within("eth_estimateGas", async {
                self.provider.estimate_gas(request.clone()).await
            })
            .await
        {
            Ok(gas) => gas,
            Err(e) if e.is_not_active() => {
                return Ok(Signing::AlreadyEnded {
                    ended: self.record_of(expected).await?,
                })
            }
            Err(e) => return Err(e),
        };
        let fees = self
            .within("eth_feeHistory", self.provider.estimate_eip1559_fees())
            .await?;
        let nonce = self
            .within("eth_getTransactionCount", async {
                self.provider
                    .get_transaction_count(self.wallet)
                    .pending()
                    .await
            })
            .await?;
        let chain_id = self
            .within("eth_chainId", self.provider.get_chain_id())
            .await?;
        let request = request
            .with_nonce(nonce)
            .with_gas_limit(
                gas.saturating_add(gas.saturating_mul(GAS_MARGIN_PERCENT) / 100)
                    .saturating_add(GAS_HEADROOM),
            )
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
            .with_chain_id(chain_id);
        let envelope = request
            .build(&self.signer.0)
            .await
            .map_err(|e| ChainError::Config(format!("signing endSession: {e}")))?;
        let signed = SignedTx {
            hash: *envelope.tx_hash(),
            nonce,
            raw: envelope.encoded_2718().into(),
        };
        debug!(%tutor, tx_hash = %signed.hash, nonce, "signed endSession");
        Ok(Signing::Signed(signed))
    }

    /// Send a signed transaction (`eth_sendRawTransaction`), the first time or again. A node that already knows
    /// it, or whose answer is "nonce too low" while the transaction has a receipt, counts as
    /// [`Broadcast::Accepted`]; "nonce too low" without a receipt is [`Broadcast::Dead`] once
    /// [`stored_tx_status`](Self::stored_tx_status) proves it.
    ///
    /// Errors: transport failures and timeouts are transient [`ChainError`]s (the node may have accepted it:
    /// broadcast again later); a nonce or fee refusal that proves nothing is [`ChainError::NonceOrFee`].
    pub async fn broadcast(&self, tx: &SignedTx) -> Result<Broadcast, ChainError> {
        let sent = self
            .within("eth_sendRawTransaction", async {
                self.provider
                    .send_raw_transaction(&tx.raw)
                    .await
                    .map(|_| ())
            })
            .await;
        let refusal = match sent {
            Ok(()) => {
                info!(tx_hash = %tx.hash, nonce = tx.nonce, "broadcast endSession");
                return Ok(Broadcast::Accepted);
            }
            Err(ChainError::NonceOrFee(message)) => message,
            Err(ChainError::Node { message, .. }) if is_already_known(&message) => message,
            Err(e) => return Err(e),
        };
        if is_already_known(&refusal) {
            debug!(tx_hash = %tx.hash, "the node already knows the transaction");
            return Ok(Broadcast::Accepted);
        }
        match self.stored_tx_status(tx).await? {
            TxStatus::Mined => Ok(Broadcast::Accepted),
            TxStatus::Dead => Ok(Broadcast::Dead),
            TxStatus::Open => Err(ChainError::NonceOrFee(refusal)),
        }
    }

    /// Whether a transaction we signed is mined, dead (its nonce consumed by another transaction, no receipt for
    /// it) or still open. The nonce is read before the receipt, so a transaction mined in between is seen as
    /// mined, never as dead.
    pub async fn stored_tx_status(&self, tx: &SignedTx) -> Result<TxStatus, ChainError> {
        let next_nonce = self
            .within("eth_getTransactionCount", async {
                self.provider
                    .get_transaction_count(self.wallet)
                    .latest()
                    .await
            })
            .await?;
        let receipt = self
            .within(
                "eth_getTransactionReceipt",
                self.provider.get_transaction_receipt(tx.hash),
            )
            .await?;
        Ok(match receipt {
            Some(_) => TxStatus::Mined,
            None if next_nonce > tx.nonce => TxStatus::Dead,
            None => TxStatus::Open,
        })
    }

    /// Wait up to the receipt timeout for `tx_hash` (our `endSession(tutor)`), polling
    /// [`check_submitted`](Self::check_submitted).
    pub async fn wait_for_settlement(
        &self,
        tx_hash: TxHash,
        tutor: Address,
        expected: Option<U256>,
    ) -> Result<EndOutcome, ChainError> {
        let deadline = tokio::time::Instant::now() + self.config.receipt_timeout;
        loop {
            if let Some(outcome) = self.check_submitted(tx_hash, tutor, expected).await? {
                return Ok(outcome);
            }
            if tokio::time::Instant::now() + self.config.receipt_poll > deadline {
                return Err(ChainError::ReceiptTimeout {
                    tx_hash,
                    after: self.config.receipt_timeout,
                });
            }
            tokio::time::sleep(self.config.receipt_poll).await;
        }
    }

    /// Look up the receipt of an `endSession(tutor)` we sent earlier (also after a restart): `None` while it is
    /// not mined. A mined transaction that failed because the session was already over is
    /// [`EndOutcome::AlreadyEnded`]; one that failed otherwise is [`ChainError::FailedOnChain`].
    pub async fn check_submitted(
        &self,
        tx_hash: TxHash,
        tutor: Address,
        expected: Option<U256>,
    ) -> Result<Option<EndOutcome>, ChainError> {
        let receipt = self
            .within(
                "eth_getTransactionReceipt",
                self.provider.get_transaction_receipt(tx_hash),
            )
            .await?;
        let Some(receipt) = receipt else {
            return Ok(None);
        };
        if !receipt.status() {
            if is_ours(&self.active_session(tutor).await?, expected) {
                warn!(%tutor, %tx_hash, "endSession failed on chain; the session is still active");
                return Err(ChainError::FailedOnChain { tx_hash });
            }
            // Our transaction lost a race: someone else ended the session first.
            let ended = self.record_of(expected).await?;
            return Ok(Some(EndOutcome::AlreadyEnded { ended }));
        }
        let event = receipt
            .logs()
            .iter()
            .filter(|log| log.address() == self.config.contract)
            .find_map(|log| LangDAO::SessionEnded::decode_log(&log.inner).ok())
            .ok_or(ChainError::MissingEvent { tx_hash })?;
        let settled = Settled {
            tx_hash,
            block: receipt.block_number.unwrap_or_default(),
            gas_used: receipt.gas_used,
            effective_gas_price_wei: receipt.effective_gas_price,
            session_id: event.sessionId,
            duration_s: event.duration.saturating_to(),
            total_paid: event.totalPaid,
        };
        info!(%tutor, %tx_hash, gas_used = settled.gas_used, duration_s = settled.duration_s,
              total_paid = %settled.total_paid, "session settled");
        Ok(Some(EndOutcome::Settled(settled)))
    }

    /// Whether the node still knows transaction `tx_hash` (pending or mined). `false` means it was dropped
    /// (replaced, evicted from the mempool, or lost with a node restart) and may be sent again.
    pub async fn transaction_known(&self, tx_hash: TxHash) -> Result<bool, ChainError> {
        let tx = self
            .within(
                "eth_getTransactionByHash",
                self.provider.get_transaction_by_hash(tx_hash),
            )
            .await?;
        Ok(tx.is_some())
    }

    /// The on-chain record of an ended session, when its id is known.
    async fn record_of(&self, expected: Option<U256>) -> Result<Option<EndedSession>, ChainError> {
        match expected {
            Some(id) => self.ended_session(id).await,
            None => Ok(None),
        }
    }

    /// Run one RPC future under the configured timeout and classify its error.
    async fn within<T, E: Into<ChainError>>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ChainError> {
        match tokio::time::timeout(self.config.rpc_timeout, fut).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(ChainError::Timeout {
                call,
                after: self.config.rpc_timeout,
            }),
        }
    }
}

/// Whether a node's refusal says it has the transaction already (geth "already known", anvil and others
/// "already imported" / "known transaction").
fn is_already_known(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "already known",
        "already imported",
        "known transaction",
        "alreadyknown",
    ]
    .iter()
    .any(|m| lower.contains(m))
}

/// Whether the tutor's active session is the one we are settling (any, when we do not know its id).
fn is_ours(active: &Option<ActiveSession>, expected: Option<U256>) -> bool {
    match (active, expected) {
        (None, _) => false,
        (Some(a), Some(id)) => a.session_id == id,
        (Some(_), None) => true,
    }
}

//! [`ChainClient`]: the backend wallet's view of one LangDAO contract. It reads a tutor's active session and ends
//! it with `endSession(tutor)`: check the chain, dry-run with `eth_call`, send, wait for the receipt, decode
//! `SessionEnded`. One client (one HTTP provider, one nonce source) per wallet, used by one sender task, so
//! nonces never race.
//!
//! Exactly-once payment rests on the contract: `endSession` reverts once the session is no longer active, so a
//! repeated send cannot pay twice. The client's job is not to waste gas on such repeats and to report what
//! happened: [`EndOutcome::AlreadyEnded`] when the chain shows the session over (ended by the student, the tutor,
//! or our own earlier transaction) without sending anything.

use std::{fmt, future::Future, time::Duration};

use alloy::{
    network::EthereumWallet,
    primitives::{Address, TxHash, U256},
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
    /// JSON-RPC endpoint, `http://` (this build has no TLS). Never logged: it may carry an API key.
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

/// The backend wallet's client for one LangDAO contract. Build once, share by reference.
#[derive(Debug, Clone)]
pub struct ChainClient {
    /// The one provider: HTTP transport, gas estimation, nonce from the node, chain id, the wallet.
    provider: DynProvider,
    /// The contract bound to `provider`.
    contract: LangDAO::LangDAOInstance<DynProvider>,
    /// The backend wallet's address (the contract's `owner` in production).
    wallet: Address,
    /// Timeouts and addresses.
    config: ChainConfig,
}

impl ChainClient {
    /// Build the client. Performs no network I/O: an unreachable node shows up on the first call.
    /// Fails with [`ChainError::Key`] for a bad key and [`ChainError::Config`] for an invalid or non-`http://`
    /// RPC URL.
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
        if url.scheme() != "http" {
            // Caught here, not at the first request: it would look like an outage and be retried for an hour.
            return Err(ChainError::Config(format!(
                "RPC URL scheme {:?} is not supported: this build speaks plain http:// only (no TLS)",
                url.scheme()
            )));
        }
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
            .wallet(EthereumWallet::from(signer))
            .connect_reqwest(http, url)
            .erased();
        let contract = LangDAO::new(config.contract, provider.clone());
        Ok(Self {
            provider,
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

    /// Check the chain, dry-run `endSession(tutor)` with `eth_call` from the backend wallet, and send it.
    /// Sends nothing when the session is already over.
    pub async fn submit_end_session(
        &self,
        tutor: Address,
        expected: Option<U256>,
    ) -> Result<Submission, ChainError> {
        let active = self.active_session(tutor).await?;
        if !is_ours(&active, expected) {
            debug!(%tutor, ?expected, "no active session to end");
            return Ok(Submission::AlreadyEnded {
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
                return Ok(Submission::AlreadyEnded {
                    ended: self.record_of(expected).await?,
                })
            }
            Err(e) => return Err(e),
        }

        let sent = self
            .within("send endSession", async {
                self.contract.endSession(tutor).send().await
            })
            .await;
        match sent {
            Ok(pending) => {
                let tx_hash = *pending.tx_hash();
                info!(%tutor, %tx_hash, "sent endSession");
                Ok(Submission::Sent(tx_hash))
            }
            // Gas estimation is a second dry run: the session may have ended in between.
            Err(e) if e.is_not_active() => Ok(Submission::AlreadyEnded {
                ended: self.record_of(expected).await?,
            }),
            Err(e) => Err(e),
        }
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

/// Whether the tutor's active session is the one we are settling (any, when we do not know its id).
fn is_ours(active: &Option<ActiveSession>, expected: Option<U256>) -> bool {
    match (active, expected) {
        (None, _) => false,
        (Some(a), Some(id)) => a.session_id == id,
        (Some(_), None) => true,
    }
}

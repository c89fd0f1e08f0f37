//! The settlement worker: the one task that sends with the backend wallet. It takes due rows from the outbox
//! ([`crate::repo`]), makes one attempt each with the [`ChainClient`], and stores the transition the outbox
//! state machine ([`crate::outbox`]) computes. Rows are handled one after the other, so nonces never race.

use std::{future::Future, sync::Arc, time::Duration};

use chrono::Utc;
use confab_store::Db;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::{
    backoff::Backoff,
    client::{ChainClient, EndOutcome, Submission},
    error::ChainError,
    outbox::{NextStep, Settlement, SettlementState},
    repo::{self, RepoError},
};

/// Worker pacing.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Rows fetched per pass.
    pub batch: i64,
    /// Sleep between passes when nobody wakes the worker (due retries are picked up this late at most).
    pub idle_poll: Duration,
    /// After the shutdown signal: the bound of the one last pass that flushes due settlements.
    pub flush_timeout: Duration,
}

impl Default for WorkerConfig {
    /// 32 rows a pass, a pass at least every 2 s, 20 s to flush at shutdown.
    fn default() -> Self {
        Self {
            batch: 32,
            idle_poll: Duration::from_secs(2),
            flush_timeout: Duration::from_secs(20),
        }
    }
}

/// Owns the chain client (so it is the wallet's only sender) and a handle on the database.
#[derive(Debug)]
pub struct SettlementWorker {
    /// The outbox's database.
    db: Db,
    /// The backend wallet's client.
    client: ChainClient,
    /// Retry policy for transient failures.
    policy: Backoff,
    /// Pacing.
    config: WorkerConfig,
    /// Woken by whoever writes a settlement, so it is sent at once rather than at the next poll.
    wake: Arc<Notify>,
}

impl SettlementWorker {
    /// A worker over `db` sending with `client`.
    pub fn new(db: Db, client: ChainClient, policy: Backoff, config: WorkerConfig) -> Self {
        Self {
            db,
            client,
            policy,
            config,
            wake: Arc::new(Notify::new()),
        }
    }

    /// A handle to wake the worker after writing a settlement (`notify_one`).
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Run passes until `shutdown` completes, then one last pass bounded by `flush_timeout`.
    ///
    /// A pass in progress (which may be waiting for a receipt) is abandoned when `shutdown` completes: that is
    /// safe because the transaction hash is stored before waiting, and without it the chain check still
    /// prevents a second payment. A full batch is followed by the next one at once.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                result = self.run_once() => match result {
                    Ok(n) if i64::try_from(n).unwrap_or(i64::MAX) >= self.config.batch => continue,
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "settlement pass failed; retrying at the next pass"),
                },
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.idle_poll) => {}
            }
        }
        match tokio::time::timeout(self.config.flush_timeout, self.run_once()).await {
            Ok(Ok(n)) => info!(attempted = n, "settlement worker stopped after a last pass"),
            Ok(Err(e)) => warn!(error = %e, "last settlement pass failed"),
            Err(_) => {
                warn!("last settlement pass timed out; the rest is settled after the restart")
            }
        }
    }

    /// Attempt every settlement due now, one after the other; returns how many were attempted.
    pub async fn run_once(&self) -> Result<usize, RepoError> {
        let due = repo::due_settlements(&self.db, Utc::now(), self.config.batch).await?;
        let n = due.len();
        for settlement in due {
            self.attempt(settlement).await?;
        }
        Ok(n)
    }

    /// One attempt on one settlement, its outcome stored; returns the settlement as stored.
    pub async fn attempt(&self, mut settlement: Settlement) -> Result<Settlement, RepoError> {
        let result = self.chain_attempt(&mut settlement).await;
        let update = settlement.after_attempt(
            result.as_ref().map(Clone::clone),
            Utc::now(),
            &self.policy,
            rand::random(),
        );
        repo::record_update(&self.db, settlement.id, &update, Utc::now()).await?;
        let settlement = settlement.apply(update);
        match (&settlement.state, &result) {
            (SettlementState::Failed { reason }, _) => {
                error!(settlement = %settlement.id, tutor = %settlement.tutor, %reason, "settlement failed for good")
            }
            (_, Err(e)) => warn!(settlement = %settlement.id, attempts = settlement.attempts,
                                 next = %settlement.next_attempt_at, error = %e, "settlement attempt failed; will retry"),
            _ => {
                info!(settlement = %settlement.id, state = settlement.state.as_str(), "settlement done")
            }
        }
        Ok(settlement)
    }

    /// The chain side of an attempt. Records `Submitted` (in `settlement` and the database) as soon as a
    /// transaction is accepted, so a crash while waiting for the receipt does not lose its hash.
    async fn chain_attempt(&self, settlement: &mut Settlement) -> Result<EndOutcome, ChainError> {
        let (tutor, expected) = (settlement.tutor, settlement.chain_session_id);
        match settlement.next_step() {
            NextStep::Nothing => {
                return Err(ChainError::Config(
                    "attempt on a finished settlement".into(),
                ))
            }
            NextStep::Recheck(tx_hash) => {
                if let Some(outcome) = self
                    .client
                    .check_submitted(tx_hash, tutor, expected)
                    .await?
                {
                    return Ok(outcome);
                }
                if self.client.transaction_known(tx_hash).await? {
                    return self
                        .client
                        .wait_for_settlement(tx_hash, tutor, expected)
                        .await;
                }
                warn!(%tx_hash, "earlier endSession transaction was dropped by the node; sending again");
            }
            NextStep::Submit => {}
        }
        match self.client.submit_end_session(tutor, expected).await? {
            Submission::AlreadyEnded { ended } => Ok(EndOutcome::AlreadyEnded { ended }),
            Submission::Sent(tx_hash) => {
                settlement.state = SettlementState::Submitted { tx_hash };
                if let Err(e) =
                    repo::mark_submitted(&self.db, settlement.id, tx_hash, Utc::now()).await
                {
                    warn!(%tx_hash, error = %e, "could not record the sent transaction; waiting for it anyway");
                }
                self.client
                    .wait_for_settlement(tx_hash, tutor, expected)
                    .await
            }
        }
    }
}

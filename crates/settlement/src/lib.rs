//! confab-settlement: paying tutors for paid sessions through the LangDAO contract, exactly once.
//!
//! # Pieces
//! - [`bindings`]: `sol!` bindings generated from the committed contract artifacts (`contracts/out/*.json`).
//! - [`ChainClient`]: one per backend wallet, owning the one HTTP provider. Reads `activeSessions(tutor)` and
//!   ends a session with `endSession(tutor)`: check the chain, dry-run (`eth_call`), sign locally, broadcast the
//!   raw transaction, await the receipt, decode `SessionEnded`. It keeps no nonce of its own (the node's pending
//!   count is asked per signature).
//! - [`ChainError`]: every chain failure, classified as transient (retry) or permanent (stop, show an operator).
//! - [`Backoff`]: the pure retry policy (exponential, capped, jittered; transient failures are retried forever).
//! - [`WalletKey`]: the backend wallet key from `CONFAB_WALLET_KEY` or `CONFAB_WALLET_KEY_FILE`, in a secret
//!   type whose `Debug` is redacted.
//! - [`outbox`]: the settlement state machine (pending → signed → settled | ended elsewhere | failed), pure;
//!   [`repo`]: the `paid_sessions` and `settlements` tables on [`confab_store::Db`], with row leases.
//! - [`SettlementWorker`]: the long-lived task that drives the outbox; its [`BacklogReader`] tells metrics how
//!   many settlements are overdue and how old the oldest open one is.
//! - [`lifecycle`]: when a room's paid session ends (End pressed, disconnect past the grace period, heartbeat
//!   timeout), a pure state machine for the room task.
//!
//! # Tasks and ownership
//! One task per server, the [`SettlementWorker`], owns the [`ChainClient`]: settlements are attempted one after
//! the other. Servers sharing one PostgreSQL each run a worker; a worker leases the rows it works
//! ([`repo::claim_due_settlements`]), so no row is worked by two at once, and a crashed worker's lease runs out.
//! Two workers on one wallet may pick the same nonce for two rows; only one of the two transactions can be mined,
//! and the other row signs again once its transaction is proven dead. Whoever ends a paid session
//! ([`repo::end_paid_session`], which writes the outbox row in the same transaction) pokes the worker through
//! its [`waker`](SettlementWorker::waker) (`tokio::sync::Notify`: a wake-up while it is busy is remembered, a
//! burst collapses into one pass); without a poke it still polls every `idle_poll`. On shutdown it makes one
//! last bounded pass; whatever is left is picked up after the restart.
//!
//! # Exactly once
//! The contract pays only while a session is active and `endSession` deactivates it, so a transaction repeated
//! after a crash or a timeout cannot pay twice. The client avoids even sending such repeats (it checks the chain
//! and dry-runs first) and reports [`EndOutcome::AlreadyEnded`] when someone else (the student, the tutor, or an
//! earlier transaction of ours) ended the session. The worker signs the transaction locally
//! ([`ChainClient::sign_end_session`]), stores the raw transaction, its hash and nonce, and only then broadcasts
//! it ([`ChainClient::broadcast`]). Every retry (a timeout, an outage, a restart) looks up that transaction's
//! receipt and rebroadcasts the same bytes; a new transaction is signed only when the stored one is proven dead
//! (its nonce used by another transaction and no receipt: [`ChainClient::stored_tx_status`]). One nonce can be
//! mined once, so at most one `endSession` per settlement is ever mined. With the contract's session id known,
//! a newer session of the same tutor is never ended by an old settlement.
//!
//! # Never giving up, never stalling
//! Transient failures are retried forever with capped back-off; a settlement open longer than
//! [`WorkerConfig::overdue_after`] is logged once and counted in the [`repo::Backlog`]. A row that does not
//! decode is set aside ([`repo::set_aside`]) and the outbox goes on with the others.
//!
//! Units: token amounts are in the token's smallest unit ("wei" of the ERC-20), times in seconds, gas in gas
//! units, gas prices in wei.

pub mod backoff;
pub mod bindings;
pub mod client;
pub mod error;
pub mod key;
pub mod lifecycle;
pub mod outbox;
pub mod repo;
mod webhook_events;
pub mod worker;

pub use alloy::primitives::{Address, TxHash, U256};
pub use backoff::Backoff;
pub use client::{
    ActiveSession, Broadcast, ChainClient, ChainConfig, EndOutcome, EndedSession, Settled,
    SignedTx, Signing, Submission, TxStatus,
};
pub use error::{ChainError, ErrorClass, NOT_ACTIVE_REASON};
pub use key::{KeyError, WalletKey, WALLET_KEY_ENV, WALLET_KEY_FILE_ENV};
pub use lifecycle::{EndPolicy, PaidSessionTracker, Party, PresenceEvent};
pub use outbox::{NextStep, Settlement, SettlementState, Update};
pub use repo::{
    Backlog, EndReason, NewPaidSession, PaidSessionRecord, RepoError, SettlementRecord,
};
pub use worker::{BacklogReader, SettlementWorker, WorkerConfig};

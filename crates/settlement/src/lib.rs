//! confab-settlement: paying tutors for paid sessions through the LangDAO contract.
//!
//! # Pieces
//! - [`bindings`]: `sol!` bindings generated from the committed contract artifacts (`contracts/out/*.json`).
//! - [`ChainClient`]: one per backend wallet, owning the one HTTP provider. Reads `activeSessions(tutor)` and
//!   ends a session with `endSession(tutor)`: check the chain, dry-run (`eth_call`), send, await the receipt,
//!   decode `SessionEnded`. It holds no mutable state of its own (the node is the nonce source), so the
//!   settlement worker owns it and is the only task that sends with that wallet.
//! - [`ChainError`]: every chain failure, classified as transient (retry) or permanent (stop, show an operator).
//! - [`Backoff`]: the pure retry policy (exponential, capped, jittered, bounded attempts).
//! - [`WalletKey`]: the backend wallet key from `CONFAB_WALLET_KEY` or `CONFAB_WALLET_KEY_FILE`, in a secret
//!   type whose `Debug` is redacted.
//!
//! # Exactly once
//! The contract pays only while a session is active and `endSession` deactivates it, so a transaction repeated
//! after a crash or a timeout cannot pay twice. The client avoids even sending such repeats (it checks the chain
//! and dry-runs first) and reports [`EndOutcome::AlreadyEnded`] when someone else (the student, the tutor, or an
//! earlier transaction of ours) ended the session. The outbox stores the transaction hash as soon as
//! [`ChainClient::submit_end_session`] returns it, and after a restart asks
//! [`ChainClient::check_submitted`] before sending anything new.
//!
//! Units: token amounts are in the token's smallest unit ("wei" of the ERC-20), times in seconds, gas in gas
//! units, gas prices in wei.

pub mod backoff;
pub mod bindings;
pub mod client;
pub mod error;
pub mod key;
pub mod outbox;
pub mod repo;
pub mod worker;

pub use alloy::primitives::{Address, TxHash, U256};
pub use backoff::{Backoff, RetryDecision};
pub use client::{
    ActiveSession, ChainClient, ChainConfig, EndOutcome, EndedSession, Settled, Submission,
};
pub use error::{ChainError, ErrorClass, NOT_ACTIVE_REASON};
pub use key::{KeyError, WalletKey, WALLET_KEY_ENV, WALLET_KEY_FILE_ENV};
pub use outbox::{NextStep, Settlement, SettlementState, Update};
pub use repo::{EndReason, NewPaidSession, RepoError, SettlementRecord};
pub use worker::{SettlementWorker, WorkerConfig};

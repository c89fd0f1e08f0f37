//! What the paid-session test binaries share: the chain kit (a real anvil with the LangDAO
//! contract), the server's chain settings, and a student's `session_started` report.
#![allow(dead_code)]

#[path = "../../crates/settlement/tests/common/mod.rs"]
#[allow(clippy::all)]
pub mod chainkit;

use crate::common::{spawn_app_with, TestApp};
use chainkit::chain::{Chain, SPANISH, TUTOR};
use confab_client::Client;
use confab_protocol::{ClientMessage, ServerMessage};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a test waits for a reply it expects.
pub const WAIT: Duration = Duration::from_secs(30);
/// `CONFAB_API_SECRET` for every paid test (32 bytes: the server refuses short secrets).
pub const API_SECRET: &str = "test-api-secret-0123456789abcdef";

/// The backend wallet is anvil's account 0 (the contract owner); the same for every test.
pub fn init_env() {
    std::env::set_var("CONFAB_WALLET_KEY", chainkit::KEYS[0]);
    std::env::set_var("CONFAB_API_SECRET", API_SECRET);
}

/// Anvil account `i`'s address, EIP-55 checksummed (what tokens carry as subject).
pub fn addr(i: usize) -> String {
    chainkit::address(i).to_checksum(None)
}

/// The chain's JSON-RPC address (to put a proxy in front of it).
pub fn rpc_addr(chain: &Chain) -> SocketAddr {
    chain
        .anvil
        .url
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

/// A server with paid sessions on: `chain`'s contract through `rpc` (default: the chain's own
/// URL), then `adjust` for anything else.
pub async fn paid_app(
    chain: &Chain,
    rpc: Option<String>,
    adjust: impl FnOnce(&mut confab::config::ServeArgs),
) -> TestApp {
    init_env();
    let rpc = rpc.unwrap_or_else(|| chain.anvil.url.clone());
    let dao = chain.dao.to_checksum(None);
    spawn_app_with(move |a| {
        a.chain_rpc_url = Some(rpc);
        a.contract_address = Some(dao);
        adjust(a);
    })
    .await
}

/// Account `sub` joined to `room` under `name`.
pub async fn join_as(app: &TestApp, sub: &str, name: &str, room: &str) -> Client {
    let token = app.tokens.mint(sub, name, 600, None);
    let url = format!("ws://{}/ws?token={token}", app.addr);
    Client::join(&url, room, name).await.expect("join")
}

/// The student's report of the session the chain kit started (tutor `TUTOR`, Spanish).
pub fn session_started() -> ClientMessage {
    ClientMessage::SessionStarted {
        tutor: addr(TUTOR),
        language: SPANISH,
    }
}

/// The student reports the on-chain session; the server checks `activeSessions(tutor)`.
/// Returns the paid session's id; panics on an error.
pub async fn report_started(student: &mut Client) -> String {
    student.send(&session_started()).await.unwrap();
    match student
        .wait_event(WAIT, |e| {
            matches!(
                e,
                ServerMessage::PaidSession { .. } | ServerMessage::Error { .. }
            )
        })
        .await
    {
        Some(ServerMessage::PaidSession { session }) => session.id,
        other => panic!("expected paid_session, got {other:?}"),
    }
}

/// A fresh room name for a paid test.
pub fn room() -> String {
    format!("paid-{}", uuid::Uuid::new_v4().simple())
}

/// Polls `GET {base}/api/rooms/{room}/paid-session` (with `token`) every 100 ms until its
/// settlement is final (`settled` or `failed`); returns that status. Panics past `within`.
pub async fn settlement_final(
    base: &str,
    token: &str,
    room: &str,
    within: Duration,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let s: serde_json::Value = crate::common::http()
            .get(format!("{base}/api/rooms/{room}/paid-session"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["settlement"]["state"] == "settled" || s["settlement"]["state"] == "failed" {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled in time: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! ChainClient against a real anvil: deploy TestToken + LangDAO, fund a student, register a tutor, start a
//! session, let chain time pass, end it from the backend wallet, the student, a stranger; and a dead endpoint.

mod common;

use std::time::{Duration, Instant};

use alloy::providers::Provider;
use common::{
    address, advance_time,
    chain::{Chain, DEPOSIT, OWNER, RATE, SPANISH, STRANGER, STUDENT, TUTOR},
    wallet_key,
};
use confab_settlement::{
    Address, ChainClient, ChainConfig, ChainError, EndOutcome, ErrorClass, Submission, U256,
};

/// Upper bound of every test.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

#[tokio::test]
async fn the_backend_wallet_ends_a_session_once_and_the_tutor_is_paid_for_the_elapsed_seconds() {
    within(async {
        let chain = Chain::deploy().await;
        let backend = chain.client(OWNER);
        let id = chain.start_session().await;
        let active = backend
            .active_session(address(TUTOR))
            .await
            .unwrap()
            .expect("an active session");
        assert_eq!(
            (active.session_id, active.student, active.language),
            (id, address(STUDENT), SPANISH)
        );
        assert_eq!(active.rate_per_second, U256::from(RATE));

        advance_time(&chain.student, 30).await;
        let before = chain.token_balance(address(TUTOR)).await;
        let started = Instant::now();
        let outcome = backend.end_session(address(TUTOR), Some(id)).await.unwrap();
        eprintln!("end_session took {:?}", started.elapsed());
        let EndOutcome::Settled(settled) = outcome else {
            panic!("expected Settled, got {outcome:?}")
        };
        eprintln!(
            "endSession gas used: {} at {} wei/gas",
            settled.gas_used, settled.effective_gas_price_wei
        );

        assert_eq!(settled.session_id, id);
        assert!(
            (30..=40).contains(&settled.duration_s),
            "duration {}",
            settled.duration_s
        );
        assert_eq!(settled.total_paid, U256::from(settled.duration_s * RATE));
        assert_eq!(
            chain.token_balance(address(TUTOR)).await - before,
            settled.total_paid
        );
        assert_eq!(
            chain.deposited(address(STUDENT)).await,
            U256::from(DEPOSIT) - settled.total_paid
        );
        assert!(settled.gas_used > 21_000 && settled.block > 0);
        assert!(backend
            .active_session(address(TUTOR))
            .await
            .unwrap()
            .is_none());

        // Second time: the chain shows no active session, nothing is sent.
        let nonce = backend
            .provider()
            .get_transaction_count(address(OWNER))
            .await
            .unwrap();
        let again = backend.end_session(address(TUTOR), Some(id)).await.unwrap();
        let EndOutcome::AlreadyEnded { ended: Some(ended) } = again else {
            panic!("got {again:?}")
        };
        assert_eq!(
            (ended.duration_s, ended.total_paid),
            (settled.duration_s, settled.total_paid)
        );
        assert_eq!(
            backend
                .provider()
                .get_transaction_count(address(OWNER))
                .await
                .unwrap(),
            nonce
        );
    })
    .await;
}

#[tokio::test]
async fn a_student_ends_their_own_session_and_the_backend_then_finds_it_already_ended() {
    within(async {
        let chain = Chain::deploy().await;
        let id = chain.start_session().await;
        advance_time(&chain.student, 10).await;
        let outcome = chain
            .client(STUDENT)
            .end_session(address(TUTOR), None)
            .await
            .unwrap();
        let EndOutcome::Settled(settled) = outcome else {
            panic!("got {outcome:?}")
        };
        assert_eq!(settled.session_id, id);
        assert_eq!(settled.total_paid, U256::from(settled.duration_s * RATE));

        let backend = chain.client(OWNER);
        let outcome = backend.end_session(address(TUTOR), Some(id)).await.unwrap();
        let EndOutcome::AlreadyEnded { ended: Some(ended) } = outcome else {
            panic!("got {outcome:?}")
        };
        assert_eq!(ended.total_paid, settled.total_paid);
    })
    .await;
}

#[tokio::test]
async fn a_stranger_cannot_end_a_session_and_the_revert_is_permanent() {
    within(async {
        let chain = Chain::deploy().await;
        let id = chain.start_session().await;
        assert!(!chain.client(STRANGER).wallet_is_owner().await.unwrap());
        assert!(chain.client(OWNER).wallet_is_owner().await.unwrap());
        assert!(chain.client(OWNER).wallet_balance_wei().await.unwrap() > U256::ZERO);
        let stranger = chain.client(STRANGER);
        let nonce = stranger
            .provider()
            .get_transaction_count(address(STRANGER))
            .await
            .unwrap();
        let err = stranger
            .end_session(address(TUTOR), Some(id))
            .await
            .unwrap_err();
        assert!(matches!(err, ChainError::Reverted { .. }), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert_eq!(
            err.revert_reason(),
            Some("Caller is not the student, tutor nor owner")
        );
        assert_eq!(
            stranger
                .provider()
                .get_transaction_count(address(STRANGER))
                .await
                .unwrap(),
            nonce
        );
        assert!(chain
            .client(OWNER)
            .active_session(address(TUTOR))
            .await
            .unwrap()
            .is_some());
    })
    .await;
}

#[tokio::test]
async fn payment_is_capped_at_the_escrow_and_the_rest_returns_to_the_student() {
    within(async {
        let chain = Chain::deploy().await;
        chain.start_session().await;
        advance_time(&chain.student, 5_000).await; // 5000 s × RATE > DEPOSIT
        let outcome = chain
            .client(OWNER)
            .end_session(address(TUTOR), None)
            .await
            .unwrap();
        let EndOutcome::Settled(settled) = outcome else {
            panic!("got {outcome:?}")
        };
        assert_eq!(settled.total_paid, U256::from(DEPOSIT));
        assert_eq!(
            chain.token_balance(address(TUTOR)).await,
            U256::from(DEPOSIT)
        );
        assert_eq!(chain.deposited(address(STUDENT)).await, U256::ZERO);
    })
    .await;
}

#[tokio::test]
async fn a_transaction_sent_before_a_restart_is_found_by_its_hash_and_a_newer_session_is_left_alone(
) {
    within(async {
        let chain = Chain::deploy().await;
        let first = chain.start_session().await;
        advance_time(&chain.student, 3).await;
        let Submission::Sent(tx_hash) = chain.client(OWNER).submit_end_session(address(TUTOR), Some(first)).await.unwrap()
        else {
            panic!("nothing sent")
        };

        // "Restart": a fresh client knows only the stored hash. anvil mines right after accepting the
        // transaction, but not synchronously: look until the receipt is there.
        let backend = chain.client(OWNER);
        assert!(backend.transaction_known(tx_hash).await.unwrap());
        let mut outcome = None;
        for _ in 0..100 {
            outcome = backend.check_submitted(tx_hash, address(TUTOR), Some(first)).await.unwrap();
            if outcome.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(outcome, Some(EndOutcome::Settled(ref s)) if s.tx_hash == tx_hash && s.session_id == first));

        // The student books the tutor again; settling the first session again must not end the second.
        let second = chain.start_session().await;
        assert_ne!(first, second);
        let outcome = backend.end_session(address(TUTOR), Some(first)).await.unwrap();
        assert!(matches!(outcome, EndOutcome::AlreadyEnded { ended: Some(ref e) } if e.session_id == first));
        assert_eq!(backend.active_session(address(TUTOR)).await.unwrap().unwrap().session_id, second);
    })
    .await;
}

#[tokio::test]
async fn a_dead_rpc_endpoint_gives_a_transient_error_quickly_without_leaking_the_url_path() {
    within(async {
        let port = common::free_port(); // nothing listens there
        let config = ChainConfig {
            rpc_timeout: Duration::from_secs(2),
            ..ChainConfig::new(
                format!("http://127.0.0.1:{port}/v3/SECRET-API-KEY?token=SECRET"),
                Address::repeat_byte(0x11),
            )
        };
        let client = ChainClient::new(config, &wallet_key(OWNER)).unwrap();
        let started = Instant::now();
        let err = client
            .end_session(Address::repeat_byte(0x22), None)
            .await
            .unwrap_err();
        eprintln!("dead endpoint answered in {:?}: {err}", started.elapsed());
        assert!(err.is_transient(), "{err:?}");
        assert!(
            matches!(err, ChainError::Unreachable(_) | ChainError::Timeout { .. }),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        for text in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
            assert!(!text.contains("SECRET"), "{text}");
        }
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    })
    .await;
}

#[test]
fn a_malformed_or_non_http_rpc_url_is_refused_at_construction_not_retried_as_an_outage() {
    let https = ChainConfig::new("https://rpc.example.org/v3/key", Address::repeat_byte(1));
    assert!(
        ChainClient::new(https, &wallet_key(OWNER)).is_ok(),
        "https:// RPC URLs are taken (TLS on ring)"
    );
    for url in ["ftp://rpc.example.org/", "not a url", "ws://127.0.0.1:8545"] {
        let config = ChainConfig::new(url, Address::repeat_byte(1));
        let err = ChainClient::new(config, &wallet_key(OWNER)).unwrap_err();
        assert!(matches!(err, ChainError::Config(_)), "{url}: {err:?}");
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert!(!err.to_string().contains("key"), "{err}");
    }
}

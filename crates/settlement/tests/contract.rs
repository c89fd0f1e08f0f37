//! LangDAO.sol itself, on anvil: who may start a session, escrow and refunds, the running cost, checked token
//! transfers and the events. (Ending sessions through the backend client is in `anvil.rs`.)

mod common;

use std::time::Duration;

use common::{
    address, advance_time,
    chain::{Chain, DEPOSIT, OWNER, RATE, SPANISH, STRANGER, STUDENT, TUTOR},
};
use confab_settlement::{
    bindings::{LangDAO, TestToken},
    ChainError, EndOutcome, U256,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

/// The revert reason of a failed contract call, through the crate's own error classification.
fn reason<T: std::fmt::Debug>(result: Result<T, alloy::contract::Error>) -> String {
    let err = ChainError::from(result.expect_err("expected a revert"));
    err.revert_reason()
        .unwrap_or_else(|| panic!("not a revert: {err:?}"))
        .to_owned()
}

#[tokio::test]
async fn starting_a_session_checks_the_language_the_balance_and_that_the_tutor_is_free() {
    within(async {
        let chain = Chain::deploy().await;
        let student = LangDAO::new(chain.dao, chain.wallet(STUDENT));
        let tutor = address(TUTOR);
        assert_eq!(
            reason(student.startSession(tutor, SPANISH + 1).call().await),
            "Tutor does not offer this language"
        );
        assert_eq!(
            reason(student.startSession(address(STUDENT), SPANISH).call().await),
            "Cannot tutor yourself"
        );
        let stranger = LangDAO::new(chain.dao, chain.wallet(STRANGER));
        assert_eq!(
            reason(stranger.startSession(tutor, SPANISH).call().await),
            "Student does not have sufficient balance"
        );
        // 59 s of funding is not enough; 60 s is.
        chain.fund(STRANGER, 59 * RATE).await;
        assert_eq!(
            reason(stranger.startSession(tutor, SPANISH).call().await),
            "Student does not have sufficient balance"
        );
        chain.fund(STRANGER, RATE).await;
        stranger.startSession(tutor, SPANISH).call().await.unwrap();

        let receipt = student
            .startSession(tutor, SPANISH)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        let started = receipt
            .decoded_log::<LangDAO::SessionStarted>()
            .unwrap()
            .data;
        assert_eq!(
            (
                started.sessionId,
                started.student,
                started.tutor,
                started.language
            ),
            (U256::from(1), address(STUDENT), tutor, SPANISH)
        );
        assert_eq!(
            reason(stranger.startSession(tutor, SPANISH).call().await),
            "There should be no ongoing session for this tutor"
        );
    })
    .await;
}

#[tokio::test]
async fn escrowed_funds_stay_locked_until_the_end_and_the_unspent_rest_can_be_withdrawn() {
    within(async {
        let chain = Chain::deploy().await;
        let student = LangDAO::new(chain.dao, chain.wallet(STUDENT));
        chain.start_session().await;
        assert_eq!(chain.deposited(address(STUDENT)).await, U256::ZERO);
        assert_eq!(
            reason(student.withdraw(U256::from(1)).call().await),
            "Insufficient balance"
        );

        advance_time(&chain.student, 10).await;
        let EndOutcome::Settled(settled) = chain
            .client(OWNER)
            .end_session(address(TUTOR), None)
            .await
            .unwrap()
        else {
            panic!("not settled")
        };
        let rest = U256::from(DEPOSIT) - settled.total_paid;
        assert_eq!(chain.deposited(address(STUDENT)).await, rest);
        let r = student
            .withdraw(rest)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(r.status());
        assert_eq!(chain.token_balance(address(STUDENT)).await, rest);
        assert_eq!(chain.deposited(address(STUDENT)).await, U256::ZERO);
        assert_eq!(chain.token_balance(chain.dao).await, U256::ZERO);
    })
    .await;
}

#[tokio::test]
async fn the_current_cost_grows_per_second_caps_at_the_escrow_and_is_gone_after_the_end() {
    within(async {
        let chain = Chain::deploy().await;
        let dao = LangDAO::new(chain.dao, chain.wallet(STUDENT));
        let id = chain.start_session().await;
        advance_time(&chain.student, 10).await;
        let cost = dao.getCurrentSessionCost(id).call().await.unwrap();
        assert!(
            cost >= U256::from(10 * RATE)
                && cost <= U256::from(12 * RATE)
                && cost % U256::from(RATE) == U256::ZERO,
            "{cost}"
        );
        advance_time(&chain.student, 5_000).await;
        assert_eq!(
            dao.getCurrentSessionCost(id).call().await.unwrap(),
            U256::from(DEPOSIT)
        );

        chain
            .client(OWNER)
            .end_session(address(TUTOR), None)
            .await
            .unwrap();
        assert_eq!(
            reason(dao.getCurrentSessionCost(id).call().await),
            "Session is not active"
        );
        let record = dao.getSession(id).call().await.unwrap();
        assert!(
            !record.isActive
                && record.totalPaid == U256::from(DEPOSIT)
                && record.endTime > record.startTime
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_transfer_that_returns_false_reverts_the_whole_end_and_the_session_stays_active() {
    within(async {
        let chain = Chain::deploy().await;
        let id = chain.start_session().await;
        advance_time(&chain.student, 10).await;
        let token = TestToken::new(chain.token, chain.wallet(OWNER));
        let r = token.setFailTransfers(true).send().await.unwrap();
        assert!(r.get_receipt().await.unwrap().status());

        let backend = chain.client(OWNER);
        let err = backend
            .end_session(address(TUTOR), Some(id))
            .await
            .unwrap_err();
        assert_eq!(
            err.revert_reason(),
            Some("Token transfer failed"),
            "{err:?}"
        );
        assert!(!err.is_transient());
        assert_eq!(
            backend
                .active_session(address(TUTOR))
                .await
                .unwrap()
                .map(|a| a.session_id),
            Some(id)
        );
        // Deposits are checked the same way.
        let stranger = LangDAO::new(chain.dao, chain.wallet(STRANGER));
        assert_eq!(
            reason(stranger.deposit(U256::from(5)).call().await),
            "Token transfer failed"
        );

        let r = token.setFailTransfers(false).send().await.unwrap();
        assert!(r.get_receipt().await.unwrap().status());
        let outcome = backend.end_session(address(TUTOR), Some(id)).await.unwrap();
        assert!(matches!(outcome, EndOutcome::Settled(_)));
    })
    .await;
}

#[tokio::test]
async fn the_contract_refuses_a_token_address_without_code() {
    within(async {
        let chain = Chain::deploy().await;
        let result = LangDAO::deploy(chain.wallet(OWNER), address(STRANGER), address(OWNER)).await;
        assert_eq!(reason(result), "Token is not a contract");
    })
    .await;
}

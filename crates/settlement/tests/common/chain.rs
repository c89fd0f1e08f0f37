//! The chain fixture: TestToken + LangDAO deployed on a fresh anvil, a funded student, a registered tutor.

use std::time::Duration;

use alloy::providers::DynProvider;
use confab_settlement::{
    bindings::{LangDAO, TestToken},
    Address, ChainClient, ChainConfig, U256,
};

use super::{address, wallet_key, wallet_provider, Anvil};

pub const OWNER: usize = 0;
pub const STUDENT: usize = 1;
pub const TUTOR: usize = 2;
pub const STRANGER: usize = 3;

/// Token units per second.
pub const RATE: u64 = 1_000;
/// Enough for 1000 s at `RATE`.
pub const DEPOSIT: u64 = 1_000_000;
pub const SPANISH: u8 = 1;

pub struct Chain {
    pub anvil: Anvil,
    pub token: Address,
    pub dao: Address,
    pub student: DynProvider,
}

impl Chain {
    /// Deploy both contracts (owner = account 0, the backend wallet), fund and deposit for the student,
    /// register the tutor for Spanish at `RATE`.
    pub async fn deploy() -> Self {
        let anvil = Anvil::start();
        let owner = wallet_provider(&anvil.url, OWNER);
        let token = *TestToken::deploy(&owner, "Test Token".into(), "TST".into())
            .await
            .unwrap()
            .address();
        let dao = *LangDAO::deploy(&owner, token, address(OWNER))
            .await
            .unwrap()
            .address();

        let student = wallet_provider(&anvil.url, STUDENT);
        let tutor = wallet_provider(&anvil.url, TUTOR);
        let r = LangDAO::new(dao, &tutor)
            .registerTutor(SPANISH, U256::from(RATE))
            .send()
            .await
            .unwrap();
        assert!(r.get_receipt().await.unwrap().status());
        let chain = Self {
            anvil,
            token,
            dao,
            student,
        };
        chain.fund(STUDENT, DEPOSIT).await;
        chain
    }

    /// A provider signing as default account `i`.
    pub fn wallet(&self, i: usize) -> DynProvider {
        wallet_provider(&self.anvil.url, i)
    }

    /// Mint `amount` for account `i`, approve the contract and deposit it.
    pub async fn fund(&self, i: usize, amount: u64) {
        let who = self.wallet(i);
        let token = TestToken::new(self.token, &who);
        let amount = U256::from(amount);
        let r = token.mint(address(i), amount).send().await.unwrap();
        assert!(r.get_receipt().await.unwrap().status());
        let r = token.approve(self.dao, amount).send().await.unwrap();
        assert!(r.get_receipt().await.unwrap().status());
        let r = LangDAO::new(self.dao, &who)
            .deposit(amount)
            .send()
            .await
            .unwrap();
        assert!(r.get_receipt().await.unwrap().status(), "deposit failed");
    }

    pub fn config(&self) -> ChainConfig {
        ChainConfig {
            receipt_timeout: Duration::from_secs(20),
            receipt_poll: Duration::from_millis(50),
            rpc_timeout: Duration::from_secs(5),
            ..ChainConfig::new(self.anvil.url.clone(), self.dao)
        }
    }

    /// A chain client signing as default account `i`.
    pub fn client(&self, i: usize) -> ChainClient {
        ChainClient::new(self.config(), &wallet_key(i)).unwrap()
    }

    /// The student starts a session with the tutor; returns its id.
    pub async fn start_session(&self) -> U256 {
        let dao = LangDAO::new(self.dao, &self.student);
        let receipt = dao
            .startSession(address(TUTOR), SPANISH)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status(), "startSession failed");
        eprintln!("startSession gas used: {}", receipt.gas_used);
        receipt
            .decoded_log::<LangDAO::SessionStarted>()
            .unwrap()
            .sessionId
    }

    pub async fn token_balance(&self, who: Address) -> U256 {
        TestToken::new(self.token, &self.student)
            .balanceOf(who)
            .call()
            .await
            .unwrap()
    }

    pub async fn deposited(&self, who: Address) -> U256 {
        LangDAO::new(self.dao, &self.student)
            .balances(who)
            .call()
            .await
            .unwrap()
    }
}

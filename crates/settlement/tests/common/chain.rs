//! The chain fixture: TestToken + LangDAO deployed on a fresh anvil, a funded student, a registered tutor.

use std::time::Duration;

use alloy::{
    network::EthereumWallet,
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
    sol_types::SolEvent,
};
use confab_settlement::{
    bindings::{LangDAO, TestToken},
    Address, ChainClient, ChainConfig, TxHash, U256,
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

impl Chain {
    /// A new tutor (a fresh random key, given 10 ether with `anvil_setBalance`) registered for Spanish at
    /// `RATE`.
    pub async fn new_tutor(&self) -> Address {
        let signer = PrivateKeySigner::random();
        let tutor = signer.address();
        let _: serde_json::Value = self
            .student
            .raw_request(
                "anvil_setBalance".into(),
                (tutor, U256::from(10u128.pow(19))),
            )
            .await
            .unwrap();
        confab_store::ensure_crypto_provider();
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_http(self.anvil.url.parse().unwrap())
            .erased();
        let r = LangDAO::new(self.dao, &provider)
            .registerTutor(SPANISH, U256::from(RATE))
            .send()
            .await
            .unwrap();
        assert!(r.get_receipt().await.unwrap().status());
        tutor
    }

    /// The student deposits `DEPOSIT` and starts a session with `tutor`; returns its id.
    pub async fn start_session_with(&self, tutor: Address) -> U256 {
        self.fund(STUDENT, DEPOSIT).await;
        // A fresh provider: `self.student` caches its nonce, and `fund` sent with another one.
        let receipt = LangDAO::new(self.dao, &self.wallet(STUDENT))
            .startSession(tutor, SPANISH)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status(), "startSession failed");
        receipt
            .decoded_log::<LangDAO::SessionStarted>()
            .unwrap()
            .sessionId
    }

    /// Every `SessionEnded` the contract emitted so far: `(session id, transaction hash)`.
    pub async fn session_ended_events(&self) -> Vec<(U256, TxHash)> {
        let filter = serde_json::json!({
            "address": self.dao,
            "fromBlock": "0x0",
            "toBlock": "latest",
            "topics": [LangDAO::SessionEnded::SIGNATURE_HASH],
        });
        let logs: Vec<serde_json::Value> = self
            .student
            .raw_request("eth_getLogs".into(), [filter])
            .await
            .unwrap();
        logs.iter()
            .map(|log| {
                let id: U256 = log["topics"][1].as_str().unwrap().parse().unwrap();
                let tx: TxHash = log["transactionHash"].as_str().unwrap().parse().unwrap();
                (id, tx)
            })
            .collect()
    }

    /// How many `SessionEnded` events name session `id`.
    pub async fn ended_count(&self, id: U256) -> usize {
        self.session_ended_events()
            .await
            .iter()
            .filter(|(s, _)| *s == id)
            .count()
    }

    /// Turn anvil's mining on each transaction on or off.
    pub async fn set_automine(&self, on: bool) {
        let _: serde_json::Value = self
            .student
            .raw_request("evm_setAutomine".into(), (on,))
            .await
            .unwrap();
    }

    /// Mine one block now.
    pub async fn mine(&self) {
        let _: serde_json::Value = self
            .student
            .raw_request("evm_mine".into(), Vec::<u8>::new())
            .await
            .unwrap();
    }

    /// A chain client for the backend wallet (account `OWNER`) reaching the chain through `rpc_url`.
    pub fn client_via(&self, rpc_url: &str, receipt_timeout: Duration) -> ChainClient {
        let config = ChainConfig {
            rpc_url: rpc_url.to_owned(),
            receipt_timeout,
            ..self.config()
        };
        ChainClient::new(config, &wallet_key(OWNER)).unwrap()
    }
}

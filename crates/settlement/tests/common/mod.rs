//! Test harness: a real anvil from the npm package, on a free port, killed on drop; wallets with anvil's
//! well-known default keys (public test keys, worthless anywhere else).

#![allow(dead_code)]

pub mod chain;
pub mod db;
pub mod proxy;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use alloy::{
    network::EthereumWallet,
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
};
use confab_settlement::{Address, WalletKey};
use secrecy::SecretString;

/// anvil's default accounts 0..4 (mnemonic "test test … junk").
pub const KEYS: [&str; 4] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
];

/// The repository root.
pub fn repo_root() -> PathBuf {
    // The first ancestor of the including crate that holds the scripts (this file is also
    // included by the root crate's tests).
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("scripts/ensure-anvil.sh").exists())
        .expect("repository root above CARGO_MANIFEST_DIR")
        .to_path_buf()
}

/// The anvil binary, installed by `scripts/ensure-anvil.sh` on first use.
pub fn anvil_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/ensure-anvil.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/ensure-anvil.sh");
        assert!(out.status.success(), "scripts/ensure-anvil.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running anvil, killed when dropped.
pub struct Anvil {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Anvil {
    /// Start anvil on a free port and wait (at most 15 s) until it accepts connections.
    /// Starts anvil on a port it picks itself (`--port 0`) and reads that port from its
    /// "Listening on" line: no window in which another process can take a port chosen for it.
    pub fn start() -> Self {
        use std::io::{BufRead, BufReader};
        let bin = anvil_bin();
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn anvil");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line.strip_prefix("Listening on ") {
                        let _ = tx.send(addr.trim().to_owned());
                        sent = true;
                    }
                }
                // Keep draining, or anvil blocks on a full pipe.
            }
        });
        let mut anvil = Self {
            child,
            url: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => {
                let addr: SocketAddr = addr.parse().expect("anvil's listening address");
                anvil.url = format!("http://{addr}");
                let deadline = Instant::now() + Duration::from_secs(15);
                while Instant::now() < deadline {
                    if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                        return anvil;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                panic!("anvil did not accept connections on {addr}");
            }
            Err(_) => panic!("anvil did not start"),
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of default account `i`.
pub fn address(i: usize) -> Address {
    KEYS[i].parse::<PrivateKeySigner>().unwrap().address()
}

/// A [`WalletKey`] for default account `i`.
pub fn wallet_key(i: usize) -> WalletKey {
    WalletKey::new(SecretString::from(KEYS[i]))
}

/// A provider signing as default account `i` (test-side actors: deployer, student, tutor).
pub fn wallet_provider(url: &str, i: usize) -> DynProvider {
    let signer: PrivateKeySigner = KEYS[i].parse().unwrap();
    confab_store::ensure_crypto_provider();
    ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url.parse().unwrap())
        .erased()
}

/// Move the chain's clock forward and mine a block.
pub async fn advance_time(provider: &DynProvider, seconds: u64) {
    let _: serde_json::Value = provider
        .raw_request("evm_increaseTime".into(), (seconds,))
        .await
        .unwrap();
    let _: serde_json::Value = provider
        .raw_request("evm_mine".into(), Vec::<u8>::new())
        .await
        .unwrap();
}

//! The real server on port 0, for the integration tests (one per test).

#![allow(dead_code)]

use confab::auth::TokenAuthority;
use confab::config::ServeArgs;
use confab::Application;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub struct TestApp {
    pub addr: SocketAddr,
    pub tokens: TokenAuthority,
    pub data_dir: PathBuf,
}

impl TestApp {
    /// A WebSocket URL with a fresh token for `user`.
    pub fn ws_url(&self, user: &str) -> String {
        format!("ws://{}/ws?token={}", self.addr, self.tokens.mint(user, user, 600, None))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub async fn spawn_app(max_participants: usize) -> TestApp {
    let data_dir = std::env::temp_dir().join(format!("confab-test-{}", uuid::Uuid::new_v4()));
    let args = ServeArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        media_port: 0,
        public_ip: vec!["127.0.0.1".parse().unwrap()],
        data_dir: data_dir.clone(),
        static_dir: None,
        max_participants,
    };
    let app = Application::build(args).expect("the server builds");
    let addr = app.http_addr();
    tokio::spawn(app.run_until_stopped());
    let secret = std::fs::read_to_string(data_dir.join("jwt-secret")).expect("secret written at start");
    TestApp { addr, tokens: TokenAuthority::new(secret.trim().to_owned().into()), data_dir }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

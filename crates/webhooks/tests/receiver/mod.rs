//! A webhook receiver for the tests: an HTTP/1.1 server (plain, or HTTPS with a self-signed
//! certificate: [`Receiver::start_tls`]) on a raw TCP listener that records
//! every request, verifies its Standard Webhooks signature with the `standardwebhooks` library, and
//! can be down (503), hanging (never answers) or up (200 after an optional delay). It also notices
//! two requests for the same (event id, path) in flight at once.

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
};

/// What the receiver does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers 503 at once.
    Down,
    /// Reads the request and never answers.
    Hang,
    /// Answers 200 after the given delay.
    Up(Duration),
}

/// One received request.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub id: String,
    pub body: String,
    /// Whether the signature verified with the test secret (library check).
    pub verified: bool,
    /// The mode it was received in (only `Up` ones were acknowledged).
    pub acknowledged: bool,
}

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    received: Vec<Received>,
    in_flight: HashMap<(String, String), u32>,
    overlaps: Vec<String>,
}

/// The receiver; clone freely.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    secret: String,
    tls: bool,
}

impl Receiver {
    /// Starts on 127.0.0.1 (free port) in `mode`, verifying with `secret` (`whsec_…`).
    pub async fn start(mode: Mode, secret: &str) -> Self {
        Self::start_with(mode, secret, None).await
    }

    /// As [`start`](Self::start), but HTTPS with a fresh self-signed certificate for `localhost`
    /// (use [`url`](Self::url): it names `localhost`). Returns the certificate, PEM, for the
    /// client's trust store.
    pub async fn start_tls(mode: Mode, secret: &str) -> (Self, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let pem = cert.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (Self::start_with(mode, secret, Some(acceptor)).await, pem)
    }

    async fn start_with(mode: Mode, secret: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new(State {
                mode: Some(mode),
                ..State::default()
            })),
            secret: secret.to_owned(),
            tls: tls.is_some(),
        };
        let me = r.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let me = me.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => me.serve(sock).await,
                        Some(a) => {
                            if let Ok(s) = a.accept(sock).await {
                                me.serve(s).await
                            }
                        }
                    }
                });
            }
        });
        r
    }

    /// The URL of `path` on this receiver (`https://localhost:port` when it speaks TLS).
    pub fn url(&self, path: &str) -> String {
        match self.tls {
            false => format!("http://{}{path}", self.addr),
            true => format!("https://localhost:{}{path}", self.addr.port()),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Acknowledged requests, deduplicated by (path, id): id → body.
    pub fn acknowledged(&self, path: &str) -> BTreeMap<String, String> {
        self.received()
            .into_iter()
            .filter(|r| r.acknowledged && r.path == path)
            .map(|r| (r.id, r.body))
            .collect()
    }

    /// Distinct ids seen (in any mode) at `path`.
    pub fn ids_seen(&self, path: &str) -> BTreeSet<String> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .map(|r| r.id)
            .collect()
    }

    /// Event ids that were posted twice at the same time.
    pub fn overlaps(&self) -> Vec<String> {
        self.state.lock().unwrap().overlaps.clone()
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, mut sock: S) {
        let mut buf = Vec::new();
        loop {
            let Some((head_len, headers, path, len)) = read_head(&mut sock, &mut buf).await else {
                return;
            };
            while buf.len() < head_len + len {
                let mut chunk = [0u8; 8192];
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = buf[head_len..head_len + len].to_vec();
            buf.drain(..head_len + len);
            let mut map = http::HeaderMap::new();
            for (k, v) in &headers {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(v),
                ) {
                    map.insert(k, v);
                }
            }
            let verified = standardwebhooks::Webhook::new(&self.secret)
                .expect("secret")
                .verify(&body, &map)
                .is_ok();
            let id = map
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let key = (id.clone(), path.clone());
            let mode = {
                let mut s = self.state.lock().unwrap();
                let n = s.in_flight.entry(key.clone()).or_default();
                *n += 1;
                if *n > 1 {
                    s.overlaps.push(id.clone());
                }
                s.mode.unwrap_or(Mode::Down)
            };
            let record = |acknowledged: bool| {
                let mut s = self.state.lock().unwrap();
                if let Some(n) = s.in_flight.get_mut(&key) {
                    *n -= 1;
                }
                s.received.push(Received {
                    path: path.clone(),
                    id: id.clone(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                    verified,
                    acknowledged,
                });
            };
            match mode {
                Mode::Down => {
                    record(false);
                    let _ = sock
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
                Mode::Hang => {
                    record(false);
                    // Keep the connection open, answer nothing, until the client gives up.
                    let mut sink = [0u8; 1024];
                    while let Ok(n) = sock.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                    return;
                }
                Mode::Up(delay) => {
                    tokio::time::sleep(delay).await;
                    // Acknowledged only if the answer could be written.
                    let ok = sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_ok();
                    record(ok);
                    if !ok {
                        return;
                    }
                }
            }
        }
    }
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads up to the end of a request head: (head length, headers, path, content-length).
async fn read_head<S: AsyncRead + Unpin>(
    sock: &mut S,
    buf: &mut Vec<u8>,
) -> Option<(usize, Vec<(String, String)>, String, usize)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let path = lines.next()?.split(' ').nth(1)?.to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let len = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            return Some((end + 4, headers, path, len));
        }
        let mut chunk = [0u8; 8192];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

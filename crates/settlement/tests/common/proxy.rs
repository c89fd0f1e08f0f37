//! A TCP proxy in front of anvil's JSON-RPC that a test can take down (refuse new connections, cut open ones),
//! bring back, and tell to forward the next `eth_sendRawTransaction` but drop the node's answer (a send that
//! "timed out" after the node accepted it). It counts the `eth_sendRawTransaction` requests it forwarded.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

const SEND_METHOD: &[u8] = b"eth_sendRawTransaction";

struct State {
    upstream: SocketAddr,
    /// `true` while the proxy is down.
    down: watch::Sender<bool>,
    /// One-shot: the connection carrying the next send gets no answer and is closed.
    drop_next_send_answer: AtomicBool,
    /// `eth_sendRawTransaction` requests forwarded.
    sends: AtomicUsize,
}

/// The proxy; stops accepting when dropped (its accept task is aborted).
pub struct RpcProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl RpcProxy {
    /// A proxy in front of `upstream_url` (`http://host:port`), up.
    pub async fn start(upstream_url: &str) -> Self {
        let upstream: SocketAddr = upstream_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("upstream host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            upstream,
            down: watch::Sender::new(false),
            drop_next_send_answer: AtomicBool::new(false),
            sends: AtomicUsize::new(0),
        });
        let accept_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pipe(client, Arc::clone(&accept_state)));
            }
        });
        Self { url, state, task }
    }

    /// Down: new connections are closed at once and open ones cut. Up: forward again.
    pub fn set_down(&self, down: bool) {
        self.state.down.send_replace(down);
    }

    /// Forward the next `eth_sendRawTransaction`, then drop the node's answer and close the connection.
    pub fn drop_next_send_answer(&self) {
        self.state
            .drop_next_send_answer
            .store(true, Ordering::SeqCst);
    }

    /// How many `eth_sendRawTransaction` requests were forwarded to the node.
    pub fn sends(&self) -> usize {
        self.state.sends.load(Ordering::SeqCst)
    }
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.down.send_replace(true);
    }
}

async fn pipe(client: TcpStream, state: Arc<State>) {
    let mut down = state.down.subscribe();
    if *down.borrow_and_update() {
        return;
    }
    let Ok(server) = TcpStream::connect(state.upstream).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let blackhole = AtomicBool::new(false);
    let requests = async {
        let mut buf = vec![0u8; 64 * 1024];
        // The end of the previous read, so a method name split between two reads is still seen.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut window = std::mem::take(&mut tail);
            let seen = window.len();
            window.extend_from_slice(&buf[..n]);
            let sends = window
                .windows(SEND_METHOD.len())
                .enumerate()
                .filter(|(i, w)| *w == SEND_METHOD && i + SEND_METHOD.len() > seen)
                .count();
            if sends > 0 {
                state.sends.fetch_add(sends, Ordering::SeqCst);
                if state.drop_next_send_answer.swap(false, Ordering::SeqCst) {
                    blackhole.store(true, Ordering::SeqCst);
                }
            }
            tail = window[window.len().saturating_sub(SEND_METHOD.len())..].to_vec();
            if server_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let answers = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if blackhole.load(Ordering::SeqCst) {
                // The node answered; the client never sees it: close the connection.
                return;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = requests => {}
        () = answers => {}
        _ = down.wait_for(|d| *d) => {}
    }
}

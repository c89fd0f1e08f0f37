//! The signaling side of the generator, behind a small interface: a [`Driver`] turns "join this
//! room as this name and publish these tracks" into a [`Participant`] whose received tracks can
//! be read. [`ConfabDriver`] speaks confab's own protocol (guest token over REST, then the
//! WebSocket protocol of `docs/protocol.md`) through `confab-client`. A WHIP/WHEP driver for
//! measuring other servers would implement the same two traits: publish with one WHIP session,
//! subscribe to each other participant with WHEP, and fill the same [`RemoteTrackStats`].

use async_trait::async_trait;
use confab_client::{Client, ClientOptions, RemoteTrackStats, SyntheticTrack};
use confab_protocol::chat::{ChatClientMessage, ChatServerMessage};
use confab_protocol::{ClientMessage, Source};
use std::sync::Arc;
use std::time::Duration;

/// Why a participant could not join or publish.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The token request failed.
    #[error("token: {0}")]
    Token(String),
    /// Joining or publishing failed.
    #[error("client: {0}")]
    Client(#[from] confab_client::ClientError),
}

/// Joins participants to rooms on one server.
#[async_trait]
pub trait Driver: Send + Sync {
    /// Short name for reports (`confab`, later `whip`).
    fn name(&self) -> &'static str;
    /// Joins `room` as `name`, publishes `tracks`, and subscribes to everyone else.
    async fn join(
        &self,
        room: &str,
        name: &str,
        tracks: &[(Source, SyntheticTrack)],
    ) -> Result<Box<dyn Participant>, DriverError>;
}

/// When the steps of a join completed, µs since the Unix epoch (0: not measured).
#[derive(Debug, Clone, Copy, Default)]
pub struct JoinSteps {
    /// Signaling answered the join (token fetched, WebSocket open, `joined` received).
    pub joined_us: u64,
    /// The publisher transport is connected (offer/answer, ICE, DTLS).
    pub published_us: u64,
}

/// One joined participant.
#[async_trait]
pub trait Participant: Send {
    /// Receive statistics of every remote track so far.
    fn remote_tracks(&self) -> Vec<Arc<RemoteTrackStats>>;
    /// When the join's steps completed.
    fn steps(&self) -> JoinSteps {
        JoinSteps::default()
    }
    /// Tells the room that `source` is muted or not (signaling only: like a browser's disabled
    /// track, the synthetic sender keeps sending). `Ok(false)`: the driver cannot.
    async fn mute(&mut self, _source: Source, _muted: bool) -> Result<bool, DriverError> {
        Ok(false)
    }
    /// Sends a chat message (`client_msg_id` unique in the room) on the chat DataChannel.
    /// `Ok(false)`: the channel is not open yet (never waits for it), or the driver has no chat.
    async fn chat(&mut self, _client_msg_id: &str, _text: &str) -> Result<bool, DriverError> {
        Ok(false)
    }
    /// Takes whatever signaling events and chat messages arrived, without waiting (their queues
    /// are bounded and would otherwise fill), and returns how many were acks of this
    /// participant's own chat messages.
    async fn drain(&mut self) -> u64 {
        0
    }
    /// Stops publishing and leaves.
    async fn leave(self: Box<Self>);
}

/// confab's own signaling: `POST /api/guest-token`, then `ws://host/ws?token=…`.
pub struct ConfabDriver {
    base: String,
    http: reqwest::Client,
    /// On a loopback target: clients bound to 127.0.0.2 … 127.0.0.17, taken in turn for guest
    /// tokens, so that a load of many participants looks like many addresses to the server's
    /// per-address guest-token budget (a burst of 20, `GUEST_TOKEN_BURST`), as real users are.
    loopback_clients: Vec<reqwest::Client>,
    next_client: std::sync::atomic::AtomicUsize,
    options: ClientOptions,
}

/// Source addresses the bench spreads its guest-token requests over on a loopback target.
const LOOPBACK_SOURCES: u8 = 16;

impl ConfabDriver {
    /// A driver for the server at `base` (`http://host:port`, no trailing slash).
    pub fn new(base: &str) -> Self {
        Self::with_keep_alive(base, true)
    }

    /// [`ConfabDriver::new`]; with `keep_alive` false its token requests keep no idle HTTP
    /// connection open to the server (a soak compares the server's open file descriptors
    /// before and after, and 16 idle keep-alive connections would be 16 of them).
    pub fn with_keep_alive(base: &str, keep_alive: bool) -> Self {
        // reqwest's rustls has no provider of its own in this workspace: ring, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = || {
            let b = reqwest::Client::builder().timeout(Duration::from_secs(10));
            if keep_alive {
                b
            } else {
                b.pool_max_idle_per_host(0)
            }
        };
        let http = builder().build().expect("http client");
        let loopback = reqwest::Url::parse(base)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .and_then(|h| h.parse::<std::net::Ipv4Addr>().ok())
            })
            .is_some_and(|ip| ip.is_loopback());
        let loopback_clients = if loopback {
            (0..LOOPBACK_SOURCES)
                .filter_map(|k| {
                    builder()
                        .local_address(std::net::IpAddr::from([127, 0, 0, 2 + k]))
                        .build()
                        .ok()
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            loopback_clients,
            next_client: std::sync::atomic::AtomicUsize::new(0),
            options: ClientOptions::default(),
        }
    }

    /// Every participant reports its remote videos as `width` px wide tiles
    /// ([`ClientOptions::tile_width`]).
    pub fn with_tile_width(mut self, width: Option<u32>) -> Self {
        self.options.tile_width = width;
        self
    }

    async fn token(&self, name: &str) -> Result<String, DriverError> {
        let k = self
            .next_client
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let http = match self.loopback_clients.len() {
            0 => &self.http,
            n => &self.loopback_clients[k % n],
        };
        let resp = http
            .post(format!("{}/api/guest-token", self.base))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .map_err(|e| DriverError::Token(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(DriverError::Token(format!("status {}", resp.status())));
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| DriverError::Token(e.to_string()))?;
        body["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| DriverError::Token("no token in the answer".into()))
    }

    fn ws_url(&self, token: &str) -> String {
        let host = self
            .base
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let scheme = if self.base.starts_with("https://") {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{host}/ws?token={token}")
    }
}

#[async_trait]
impl Driver for ConfabDriver {
    fn name(&self) -> &'static str {
        "confab"
    }

    async fn join(
        &self,
        room: &str,
        name: &str,
        tracks: &[(Source, SyntheticTrack)],
    ) -> Result<Box<dyn Participant>, DriverError> {
        let token = self.token(name).await?;
        let mut client = Client::join_with(&self.ws_url(&token), room, name, self.options).await?;
        let joined_us = crate::now_us();
        if !tracks.is_empty() {
            client.publish(tracks).await?;
        }
        let steps = JoinSteps {
            joined_us,
            published_us: crate::now_us(),
        };
        Ok(Box::new(ConfabParticipant(client, steps)))
    }
}

struct ConfabParticipant(Client, JoinSteps);

#[async_trait]
impl Participant for ConfabParticipant {
    fn remote_tracks(&self) -> Vec<Arc<RemoteTrackStats>> {
        self.0.remote_tracks()
    }
    fn steps(&self) -> JoinSteps {
        self.1
    }
    async fn mute(&mut self, source: Source, muted: bool) -> Result<bool, DriverError> {
        self.0.send(&ClientMessage::Mute { source, muted }).await?;
        Ok(true)
    }
    async fn chat(&mut self, client_msg_id: &str, text: &str) -> Result<bool, DriverError> {
        // Already open, or not now: a zero timeout polls once.
        if self.0.chat_ready(Duration::ZERO).await.is_err() {
            return Ok(false);
        }
        self.0
            .chat_send(&ChatClientMessage::Send {
                client_msg_id: client_msg_id.to_owned(),
                text: text.to_owned(),
            })
            .await?;
        Ok(true)
    }
    async fn drain(&mut self) -> u64 {
        // Bounded: at most what the two queues hold (4096 each).
        for _ in 0..4096 {
            if self.0.next_event(Duration::ZERO).await.is_none() {
                break;
            }
        }
        let mut acks = 0;
        for _ in 0..4096 {
            match self.0.wait_chat(Duration::ZERO, |_| true).await {
                Some(ChatServerMessage::Ack { .. }) => acks += 1,
                Some(_) => {}
                None => break,
            }
        }
        acks
    }
    async fn leave(self: Box<Self>) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.0.leave()).await;
    }
}

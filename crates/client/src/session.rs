//! One confab participant: the signaling socket, the two peer connections, the synthetic
//! senders and the receive statistics.

use crate::media::{
    now_us, payload, RemoteTrackStats, SyntheticTrack, LAYER_SHIFT, SIMULCAST_RIDS,
    SIMULCAST_SHARES,
};
use confab_protocol::chat::{ChatClientMessage, ChatServerMessage};
use confab_protocol::{ClientMessage, ErrorCode, Kind, PublishTrackMsg, ServerMessage, Source};
use futures_util::{SinkExt, StreamExt};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder,
};

/// RTP stream id header extension (RFC 8852 section 3.1): names a simulcast layer.
pub const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
/// Media identification header extension (RFC 8843 section 15).
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

/// The id an SDP's first `a=extmap` line gives `uri` (RFC 8285 section 8), if any.
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let rest = l.strip_prefix("a=extmap:")?;
        let (id, u) = rest.split_once(' ')?;
        (u.split_whitespace().next()? == uri)
            .then(|| id.split('/').next()?.parse().ok())
            .flatten()
    })
}

/// Payload type the client registers for VP8 (the answerer keeps the offerer's numbers).
pub const VP8_PT: u8 = 96;
/// Payload type the client registers for Opus.
pub const OPUS_PT: u8 = 111;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// WebSocket connect or I/O failed.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// The server refused with an `error` message.
    #[error("refused: {code:?}: {message}")]
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// Text.
        message: String,
    },
    /// webrtc-rs failed.
    #[error("webrtc: {0}")]
    WebRtc(String),
    /// Nothing arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

fn rtc_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::WebRtc(e.to_string())
}

/// How the client's peer connections behave, beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientOptions {
    /// Send ICE consent checks (binding requests on the selected pair) this often, with no
    /// `disconnected` state and `failed` after 30 s without a response: an RFC 7675 peer such as
    /// aiortc (5 s ± 20 %). `None`: webrtc-rs's defaults (checks every 2 s, disconnected after
    /// 5 s, failed after 30 s).
    pub ice_keepalive: Option<Duration>,
    /// Report every remote video as rendered this many px wide (`track_settings` after each
    /// subscribe answer), as a grid of small tiles would: the server then forwards a simulcast
    /// publisher's smallest layer that is wide enough. `None`: no report (the largest layer).
    pub tile_width: Option<u32>,
}

/// Every server message the client did not consume itself (all but `subscribe_offer` and
/// `publish_answer`).
pub type ClientEvent = ServerMessage;

struct Handler {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    remote: Option<Arc<Mutex<Vec<Arc<RemoteTrackStats>>>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some(remote) = self.remote.clone() else {
            return;
        };
        let participant = track.stream_id().await.to_string();
        let track_id = track.track_id().await.to_string();
        let video = track.kind().await == RtpCodecKind::Video;
        let stats = Arc::new(RemoteTrackStats {
            participant,
            track: track_id,
            video,
            ..Default::default()
        });
        remote.lock().expect("remote lock").push(stats.clone());
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(pkt) => stats.record(&pkt.payload),
                    TrackRemoteEvent::OnEnded => {
                        stats
                            .ended
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                    _ => {}
                }
            }
            stats
                .ended
                .store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

struct Pc {
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
}

async fn new_pc(
    remote: Option<Arc<Mutex<Vec<Arc<RemoteTrackStats>>>>>,
    options: ClientOptions,
) -> Result<Pc, ClientError> {
    let mut me = MediaEngine::default();
    let feedback = vec![
        RTCPFeedback {
            typ: "nack".into(),
            parameter: "".into(),
        },
        RTCPFeedback {
            typ: "nack".into(),
            parameter: "pli".into(),
        },
        RTCPFeedback {
            typ: "ccm".into(),
            parameter: "fir".into(),
        },
    ];
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: feedback,
            },
            payload_type: VP8_PT,
        },
        RtpCodecKind::Video,
    )
    .map_err(rtc_err)?;
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            payload_type: OPUS_PT,
        },
        RtpCodecKind::Audio,
    )
    .map_err(rtc_err)?;
    // Simulcast publishing names layers by RID; the server answers with both extensions.
    for uri in [MID_URI, RID_URI] {
        me.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )
        .map_err(rtc_err)?;
    }
    let registry = register_default_interceptors(Registry::new(), &mut me).map_err(rtc_err)?;
    let (gtx, grx) = watch::channel(false);
    let (stx, srx) = watch::channel(RTCPeerConnectionState::New);
    let handler = Arc::new(Handler {
        gathered: gtx,
        state: stx,
        remote,
    });
    let runtime = webrtc::runtime::default_runtime()
        .ok_or_else(|| ClientError::WebRtc("no runtime".into()))?;
    // A 20 ms ICE check interval (default 200 ms) and the DTLS client role when answering, so
    // join time measures the server rather than this client's pacing (docs/performance.md).
    let mut setting_engine = SettingEngineBuilder::new()
        .with_ice_connection_attempts(Some(Duration::from_millis(20)), None)
        .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Client);
    if let Some(every) = options.ice_keepalive {
        setting_engine = setting_engine.with_ice_timeouts(
            Some(Duration::ZERO),
            Some(Duration::from_secs(30)),
            Some(every),
        );
    }
    let setting_engine = setting_engine.build();
    let pc = PeerConnectionBuilder::new()
        .with_setting_engine(setting_engine)
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_runtime(runtime)
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .map_err(rtc_err)?;
    Ok(Pc {
        pc: Arc::new(pc),
        gathered: grx,
        state: srx,
    })
}

async fn wait_gathered(rx: &mut watch::Receiver<bool>) -> Result<(), ClientError> {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|g| *g))
        .await
        .map_err(|_| ClientError::Timeout("ICE gathering"))?
        .map_err(|_| ClientError::Timeout("ICE gathering"))?;
    Ok(())
}

struct Shared {
    publish_answer: Mutex<Option<oneshot::Sender<Result<String, ClientError>>>>,
    remote: Arc<Mutex<Vec<Arc<RemoteTrackStats>>>>,
    subscriber: tokio::sync::Mutex<Option<Pc>>,
    /// Subscribe offers received.
    offers: std::sync::atomic::AtomicU64,
    /// Peer-connection options for both transports.
    options: ClientOptions,
    /// The simulcast layers (RIDs) the server asked each source to keep sending
    /// (`publisher_layers`); a source not listed sends all of its layers.
    layers: Mutex<Vec<(Source, Vec<String>)>>,
}

impl Shared {
    fn new(options: ClientOptions) -> Arc<Self> {
        Arc::new(Shared {
            publish_answer: Mutex::new(None),
            remote: Arc::new(Mutex::new(Vec::new())),
            subscriber: tokio::sync::Mutex::new(None),
            offers: Default::default(),
            options,
            layers: Mutex::new(Vec::new()),
        })
    }

    /// Whether layer `rid` of `source` is to be sent (the server did not ask to stop it).
    fn layer_wanted(&self, source: Source, rid: &str) -> bool {
        self.layers
            .lock()
            .expect("lock")
            .iter()
            .find(|(s, _)| *s == source)
            .is_none_or(|(_, rids)| rids.iter().any(|r| r == rid))
    }
}

/// A joined participant.
pub struct Client {
    /// Our id (`p<n>`).
    pub participant_id: String,
    /// The others at join time.
    pub joined: ServerMessage,
    out: mpsc::Sender<String>,
    events: mpsc::Receiver<ClientEvent>,
    shared: Arc<Shared>,
    publisher: Option<Pc>,
    senders: Vec<tokio::task::JoinHandle<()>>,
    /// Stops the synthetic senders.
    stop: watch::Sender<bool>,
    chat: Option<Arc<dyn DataChannel>>,
    chat_open: watch::Receiver<bool>,
    chat_tx: mpsc::Sender<ChatServerMessage>,
    chat_rx: mpsc::Receiver<ChatServerMessage>,
}

impl Client {
    /// Opens `ws_url` (`ws://host:port/ws?token=…`) and sends nothing yet: returns the raw
    /// socket halves for bad-input tests via [`Client::join`]'s building blocks.
    async fn open(
        ws_url: &str,
        options: ClientOptions,
    ) -> Result<
        (
            mpsc::Sender<String>,
            mpsc::Receiver<ServerMessage>,
            Arc<Shared>,
        ),
        ClientError,
    > {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
        let (ev_tx, ev_rx) = mpsc::channel::<ServerMessage>(4096);
        let shared = Shared::new(options);
        tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let sh = shared.clone();
        let out2 = out_tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(m) = serde_json::from_str::<ServerMessage>(&text) else {
                    continue;
                };
                match m {
                    ServerMessage::SubscribeOffer { sdp, tracks } => {
                        sh.offers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        match answer_subscribe(&sh, sdp).await {
                            Ok(answer) => {
                                let msg = ClientMessage::SubscribeAnswer { sdp: answer };
                                let _ = out2.send(serde_json::to_string(&msg).expect("json")).await;
                                if let Some(width) = sh.options.tile_width {
                                    for t in tracks.iter().filter(|t| t.kind == Kind::Video) {
                                        let msg = ClientMessage::TrackSettings {
                                            track_id: t.track_id.clone(),
                                            enabled: true,
                                            width: Some(width),
                                            height: Some(width * 9 / 16),
                                        };
                                        let _ = out2
                                            .send(serde_json::to_string(&msg).expect("json"))
                                            .await;
                                    }
                                }
                            }
                            Err(e) => tracing::warn!("subscribe answer failed: {e}"),
                        }
                    }
                    ServerMessage::PublisherLayers { source, rids } => {
                        // Like a browser, stop encoding the layers nobody wants.
                        {
                            let mut l = sh.layers.lock().expect("lock");
                            l.retain(|(s, _)| *s != source);
                            l.push((source, rids.clone()));
                        }
                        let _ = ev_tx.try_send(ServerMessage::PublisherLayers { source, rids });
                    }
                    ServerMessage::PublishAnswer { sdp } => {
                        if let Some(tx) = sh.publish_answer.lock().expect("lock").take() {
                            let _ = tx.send(Ok(sdp));
                        }
                    }
                    ServerMessage::Error { code, message }
                        if sh.publish_answer.lock().expect("lock").is_some() =>
                    {
                        if let Some(tx) = sh.publish_answer.lock().expect("lock").take() {
                            let _ = tx.send(Err(ClientError::Refused {
                                code,
                                message: message.clone(),
                            }));
                        }
                        let _ = ev_tx.try_send(ServerMessage::Error { code, message });
                    }
                    other => {
                        let _ = ev_tx.try_send(other);
                    }
                }
            }
        });
        Ok((out_tx, ev_rx, shared))
    }

    /// Connects and joins `room` as `name`. Errors: [`ClientError::Refused`] (e.g. `room_full`).
    pub async fn join(ws_url: &str, room: &str, name: &str) -> Result<Client, ClientError> {
        Self::join_with(ws_url, room, name, ClientOptions::default()).await
    }

    /// [`Client::join`] with peer-connection `options` (e.g. RFC 7675 consent timing).
    pub async fn join_with(
        ws_url: &str,
        room: &str,
        name: &str,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let (out, mut events, shared) = Self::open(ws_url, options).await?;
        let join = ClientMessage::Join {
            room: room.into(),
            name: name.into(),
        };
        out.send(serde_json::to_string(&join).expect("json"))
            .await
            .map_err(|_| ClientError::WebSocket("closed".into()))?;
        let first = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .map_err(|_| ClientError::Timeout("joined"))?
            .ok_or_else(|| ClientError::WebSocket("closed".into()))?;
        let participant_id = match &first {
            ServerMessage::Joined { participant_id, .. } => participant_id.clone(),
            ServerMessage::Error { code, message } => {
                return Err(ClientError::Refused {
                    code: *code,
                    message: message.clone(),
                })
            }
            other => {
                return Err(ClientError::WebSocket(format!(
                    "unexpected first message {other:?}"
                )))
            }
        };
        Ok(Self::assemble(participant_id, first, out, events, shared))
    }

    /// A client with nothing published yet over the signaling halves `out` and `events`.
    fn assemble(
        participant_id: String,
        joined: ServerMessage,
        out: mpsc::Sender<String>,
        events: mpsc::Receiver<ClientEvent>,
        shared: Arc<Shared>,
    ) -> Client {
        let (stop, _) = watch::channel(false);
        let (chat_tx, chat_rx) = mpsc::channel(4096);
        let (_, chat_open) = watch::channel(false);
        Client {
            participant_id,
            joined,
            out,
            events,
            shared,
            publisher: None,
            senders: vec![],
            stop,
            chat: None,
            chat_open,
            chat_tx,
            chat_rx,
        }
    }

    /// Sends a raw text frame (for bad-input tests).
    pub async fn send_raw(&self, text: impl Into<String>) -> Result<(), ClientError> {
        self.out
            .send(text.into())
            .await
            .map_err(|_| ClientError::WebSocket("closed".into()))
    }

    /// Sends a protocol message.
    pub async fn send(&self, m: &ClientMessage) -> Result<(), ClientError> {
        self.send_raw(serde_json::to_string(m).expect("json")).await
    }

    /// The next event, or `None` after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<ClientEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for an event matching `pred`, discarding others; `None` after `timeout`.
    pub async fn wait_event(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ClientEvent) -> bool,
    ) -> Option<ClientEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next_event(left).await?;
            if pred(&ev) {
                return Some(ev);
            }
        }
    }

    /// Publishes synthetic tracks (`Source` decides the kind) and starts sending once the
    /// publisher transport is connected. Errors: negotiation refused or timed out.
    pub async fn publish(
        &mut self,
        tracks: &[(Source, SyntheticTrack)],
    ) -> Result<(), ClientError> {
        let (shared, out) = (self.shared.clone(), self.out.clone());
        self.publish_with(tracks, true, move |sdp, tracks| async move {
            let (tx, rx) = oneshot::channel();
            *shared.publish_answer.lock().expect("lock") = Some(tx);
            let offer = ClientMessage::PublishOffer { sdp, tracks };
            out.send(serde_json::to_string(&offer).expect("json"))
                .await
                .map_err(|_| ClientError::WebSocket("closed".into()))?;
            tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .map_err(|_| ClientError::Timeout("publish_answer"))?
                .map_err(|_| ClientError::Timeout("publish_answer"))?
        })
        .await
    }

    /// A client of no signaling connection, for publishing over another offer/answer
    /// exchange ([`Client::publish_whip`]); its `participant_id` is `id`.
    pub fn detached(id: &str, options: ClientOptions) -> Client {
        let (out, _) = mpsc::channel(1);
        let (_, events) = mpsc::channel(1);
        let joined = ServerMessage::Pong { ts: None };
        Self::assemble(id.to_owned(), joined, out, events, Shared::new(options))
    }

    /// Publishes `tracks` the way a WHIP encoder does (RFC 9725): one offer with every
    /// candidate in it (gathering complete, no trickle) and no DataChannel, handed to
    /// `exchange`, which returns the answer (e.g. from `POST /whip/{room}`). Sends once the
    /// transport is connected. Errors: those of `exchange`, a connection timeout.
    pub async fn publish_whip<F, Fut>(
        tracks: &[(Source, SyntheticTrack)],
        exchange: F,
    ) -> Result<Client, ClientError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<String, ClientError>>,
    {
        let mut c = Client::detached("whip", ClientOptions::default());
        c.publish_with(tracks, false, |sdp, _| exchange(sdp))
            .await?;
        Ok(c)
    }

    /// [`Client::publish`] over any offer/answer exchange: `exchange` gets the offer (all
    /// candidates gathered) and the tracks it carries, and returns the answer. With `chat`, a
    /// `chat` DataChannel is created before the offer, as the browser client does.
    async fn publish_with<F, Fut>(
        &mut self,
        tracks: &[(Source, SyntheticTrack)],
        chat: bool,
        exchange: F,
    ) -> Result<(), ClientError>
    where
        F: FnOnce(String, Vec<PublishTrackMsg>) -> Fut,
        Fut: std::future::Future<Output = Result<String, ClientError>>,
    {
        let mut pc = new_pc(None, self.shared.options).await?;
        let mut locals = Vec::new();
        for (source, spec) in tracks {
            let kind = if spec.video {
                RtpCodecKind::Video
            } else {
                RtpCodecKind::Audio
            };
            // One stream, or one per simulcast layer: (SSRC, RID, packets per second).
            let streams: Vec<(u32, Option<&'static str>, u32)> = if spec.video && spec.simulcast {
                SIMULCAST_RIDS
                    .iter()
                    .zip(SIMULCAST_SHARES)
                    .map(|(rid, share)| {
                        let pps = ((spec.packets_per_s as f64 * share) as u32).max(10);
                        (rand::random::<u32>() | 1, Some(*rid), pps)
                    })
                    .collect()
            } else {
                vec![(rand::random::<u32>() | 1, None, spec.packets_per_s)]
            };
            let codec = if spec.video {
                RTCRtpCodec {
                    mime_type: "video/VP8".into(),
                    clock_rate: 90_000,
                    ..Default::default()
                }
            } else {
                RTCRtpCodec {
                    mime_type: "audio/opus".into(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                    ..Default::default()
                }
            };
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                format!("{}-stream", self.participant_id),
                format!("{:?}", source).to_lowercase(),
                format!("{:?}", source).to_lowercase(),
                kind,
                streams
                    .iter()
                    .map(|&(ssrc, rid, _)| RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            rid: rid.unwrap_or_default().to_owned(),
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: codec.clone(),
                        ..Default::default()
                    })
                    .collect(),
            )));
            pc.pc
                .add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(rtc_err)?;
            locals.push((*source, *spec, track, streams));
        }
        if chat {
            // The chat DataChannel, created before the first offer like the browser client does.
            let dc = pc
                .pc
                .create_data_channel("chat", None)
                .await
                .map_err(rtc_err)?;
            let (open_tx, open_rx) = watch::channel(false);
            self.chat_open = open_rx;
            let chat_tx = self.chat_tx.clone();
            let dc2 = dc.clone();
            tokio::spawn(async move {
                while let Some(ev) = dc2.poll().await {
                    match ev {
                        DataChannelEvent::OnOpen => {
                            let _ = open_tx.send(true);
                        }
                        DataChannelEvent::OnMessage(msg) => {
                            if let Ok(m) = serde_json::from_slice::<ChatServerMessage>(&msg.data) {
                                let _ = chat_tx.try_send(m);
                            }
                        }
                        DataChannelEvent::OnClose => break,
                        _ => {}
                    }
                }
            });
            self.chat = Some(dc);
        }
        let offer = pc.pc.create_offer(None).await.map_err(rtc_err)?;
        pc.pc.set_local_description(offer).await.map_err(rtc_err)?;
        wait_gathered(&mut pc.gathered).await?;
        let sdp = pc
            .pc
            .local_description()
            .await
            .ok_or_else(|| ClientError::WebRtc("no local description".into()))?
            .sdp;
        // Simulcast layers carry their MID and RID (RFC 8852) on every packet, at the ids this
        // offer gave the extensions (the answer keeps them).
        let mid_ext = extmap_id(&sdp, MID_URI);
        let rid_ext = extmap_id(&sdp, RID_URI);
        // Map each local track to its m-line by the sender's track id.
        let mut msg_tracks = Vec::new();
        let mut mids: Vec<(String, String)> = Vec::new();
        for t in pc.pc.get_transceivers().await {
            let mid = t.mid().await.map_err(rtc_err)?.unwrap_or_default();
            let Some(sender) = t.sender().await.map_err(rtc_err)? else {
                continue;
            };
            let id = sender.track().track_id().await.to_string();
            if let Some((source, spec, _, _)) = locals
                .iter()
                .find(|(src, _, _, _)| format!("{:?}", src).to_lowercase() == id)
            {
                mids.push((id.clone(), mid.clone()));
                msg_tracks.push(PublishTrackMsg {
                    mid,
                    kind: if spec.video { Kind::Video } else { Kind::Audio },
                    source: *source,
                });
            }
        }
        let answer = exchange(sdp, msg_tracks).await?;
        pc.pc
            .set_remote_description(RTCSessionDescription::answer(answer).map_err(rtc_err)?)
            .await
            .map_err(rtc_err)?;
        tokio::time::timeout(
            Duration::from_secs(10),
            pc.state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .map_err(|_| ClientError::Timeout("publisher connected"))?
        .map_err(|_| ClientError::Timeout("publisher connected"))?;
        for (source, spec, track, streams) in locals {
            let id = format!("{:?}", source).to_lowercase();
            let mid = mids
                .iter()
                .find(|(t, _)| *t == id)
                .map(|(_, m)| bytes::Bytes::from(m.clone().into_bytes()));
            for (layer, (ssrc, rid, pps)) in streams.into_iter().enumerate() {
                let mut stop = self.stop.subscribe();
                let track = track.clone();
                // MID and RID header extensions for a simulcast layer, when both were negotiated.
                let tags = match (rid, mid_ext, rid_ext, &mid) {
                    (Some(rid), Some(mid_id), Some(rid_id), Some(mid)) => {
                        Some((mid_id, rid_id, mid.clone(), rid))
                    }
                    _ => None,
                };
                let shared = self.shared.clone();
                self.senders.push(tokio::spawn(async move {
                    let pt = if spec.video { VP8_PT } else { OPUS_PT };
                    let clock = if spec.video { 90_000u64 } else { 48_000 };
                    let period = Duration::from_micros(1_000_000 / pps.max(1) as u64);
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    let mut buf = Vec::with_capacity(spec.payload_bytes);
                    let seq0: u16 = rand::random();
                    let ts0: u32 = rand::random();
                    let started = tokio::time::Instant::now();
                    // A layer the server asked to stop sends nothing and restarts on a keyframe,
                    // as an encoder does; `counter` numbers the packets sent.
                    let mut counter = 0u32;
                    let mut stopped = false;
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {}
                            _ = stop.changed() => break,
                        }
                        if rid.is_some_and(|r| !shared.layer_wanted(source, r)) {
                            stopped = true;
                            continue;
                        }
                        let keyframe = spec.video
                            && (std::mem::take(&mut stopped)
                                || counter
                                    % (spec.keyframe_every as u64 * pps as u64
                                        / spec.packets_per_s.max(1) as u64)
                                        .max(1) as u32
                                    == 0);
                        payload::build(
                            spec.video,
                            keyframe,
                            (layer as u32) << LAYER_SHIFT | counter & ((1 << LAYER_SHIFT) - 1),
                            now_us(),
                            spec.payload_bytes,
                            &mut buf,
                        );
                        let elapsed = started.elapsed().as_micros() as u64;
                        let mut header = rtc::rtp::Header {
                            version: 2,
                            marker: true,
                            payload_type: pt,
                            sequence_number: seq0.wrapping_add(counter as u16),
                            timestamp: ts0.wrapping_add((elapsed * clock / 1_000_000) as u32),
                            ssrc,
                            ..Default::default()
                        };
                        if let Some((mid_id, rid_id, mid, rid)) = &tags {
                            let _ = header.set_extension(*mid_id, mid.clone());
                            let _ = header
                                .set_extension(*rid_id, bytes::Bytes::from_static(rid.as_bytes()));
                        }
                        let pkt = rtc::rtp::Packet {
                            header,
                            payload: bytes::Bytes::copy_from_slice(&buf),
                        };
                        if track.write_rtp(pkt).await.is_err() {
                            break;
                        }
                        counter = counter.wrapping_add(1);
                    }
                }));
            }
        }
        self.publisher = Some(pc);
        Ok(())
    }

    /// Waits until the chat DataChannel is open (after [`Client::publish`]).
    pub async fn chat_ready(&mut self, timeout: Duration) -> Result<(), ClientError> {
        tokio::time::timeout(timeout, self.chat_open.wait_for(|o| *o))
            .await
            .map_err(|_| ClientError::Timeout("chat channel open"))?
            .map_err(|_| ClientError::Timeout("chat channel open"))?;
        Ok(())
    }

    /// Sends a chat message on the `chat` DataChannel.
    pub async fn chat_send(&self, m: &ChatClientMessage) -> Result<(), ClientError> {
        let dc = self
            .chat
            .as_ref()
            .ok_or_else(|| ClientError::WebRtc("no chat channel: publish first".into()))?;
        dc.send_text(&serde_json::to_string(m).expect("json"))
            .await
            .map_err(rtc_err)
    }

    /// Sends raw text on the `chat` DataChannel (bad-input tests).
    pub async fn chat_send_raw(&self, text: &str) -> Result<(), ClientError> {
        let dc = self
            .chat
            .as_ref()
            .ok_or_else(|| ClientError::WebRtc("no chat channel: publish first".into()))?;
        dc.send_text(text).await.map_err(rtc_err)
    }

    /// Waits for a chat message matching `pred`, discarding others; `None` after `timeout`.
    pub async fn wait_chat(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ChatServerMessage) -> bool,
    ) -> Option<ChatServerMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = tokio::time::timeout(left, self.chat_rx.recv())
                .await
                .ok()
                .flatten()?;
            if pred(&m) {
                return Some(m);
            }
        }
    }

    /// Statistics of every remote track received so far.
    pub fn remote_tracks(&self) -> Vec<Arc<RemoteTrackStats>> {
        self.shared.remote.lock().expect("lock").clone()
    }

    /// Subscribe offers answered so far.
    pub fn subscribe_offers(&self) -> u64 {
        self.shared
            .offers
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops sending, leaves, closes both transports.
    pub async fn leave(mut self) {
        let _ = self.stop.send(true);
        let _ = self.send(&ClientMessage::Leave).await;
        for s in self.senders.drain(..) {
            let _ = s.await;
        }
        if let Some(p) = self.publisher.take() {
            let _ = p.pc.close().await;
        }
        if let Some(s) = self.shared.subscriber.lock().await.take() {
            let _ = s.pc.close().await;
        }
    }
}

async fn answer_subscribe(sh: &Arc<Shared>, sdp: String) -> Result<String, ClientError> {
    let mut guard = sh.subscriber.lock().await;
    if guard.is_none() {
        *guard = Some(new_pc(Some(sh.remote.clone()), sh.options).await?);
    }
    let pc = guard.as_mut().expect("just set");
    pc.pc
        .set_remote_description(RTCSessionDescription::offer(sdp).map_err(rtc_err)?)
        .await
        .map_err(rtc_err)?;
    let answer = pc.pc.create_answer(None).await.map_err(rtc_err)?;
    let _ = pc.gathered.borrow_and_update();
    pc.pc.set_local_description(answer).await.map_err(rtc_err)?;
    // First negotiation gathers candidates; later ones reuse them.
    let _ = tokio::time::timeout(Duration::from_secs(2), pc.gathered.wait_for(|g| *g)).await;
    Ok(pc
        .pc
        .local_description()
        .await
        .ok_or_else(|| ClientError::WebRtc("no local description".into()))?
        .sdp)
}

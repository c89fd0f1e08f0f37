//! One task per WebSocket: reads client messages, calls the media plane, writes its events.
//!
//! The task owns the socket and the participant's event queue; it ends when the client closes,
//! leaves, goes silent for [`IDLE_TIMEOUT`], or the media plane removes the participant.
//!
//! A participant is not its socket: when the socket is lost without a `leave`, the participant
//! is detached (it stays in its room, media untouched, for the resume grace period) and this
//! task lingers on its event queue. If the client comes back on a new socket with `resume`, the
//! media plane hands the participant to that socket's task and this one ends quietly
//! (`Closed(Resumed)`); if not, the participant leaves when the grace period ends and this task
//! reports the leave (paid-session presence, the chat's "left" line).

use super::convert::{
    event_message, kind_of, paid_error_code, paid_session_msg, participant_msg, source_in,
};
use super::protocol::{
    parse_client_message, reply_text, request_id, ClientMessage, ErrorCode, ServerMessage, Target,
    MAX_SDP_BYTES,
};
use super::ratelimit::TokenBucket;
use crate::auth::Claims;
use crate::calls::CallService;
use crate::chat::{ChatParticipant, ChatService, CHAT_LABEL};
use crate::paid::{parse_address, PaidEvent, PaidHandle, Presence};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use confab_sfu::{
    Attachment, ParticipantId, PublishTrack, RoomId, SfuEvent, SfuHandle, TrackId, TrackSettings,
    TransportRole,
};
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// WebSocket ping interval.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// A socket that sends nothing (no message, no pong) for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A socket that has neither joined (or resumed) a room nor used presence, calls or matching
/// this long after it opened is closed (`join_timeout`): a socket costs the server memory and a
/// task, and a client that opens many and never uses them hurts only itself.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Signaling rate limit: average messages per second per socket.
pub const RATE_PER_S: f64 = 5.0;
/// Signaling rate limit: burst. What the page sends at once (a join, its offer, trickled
/// candidates, `track_settings` for every tile of a 16-person room) is about 30 messages.
pub const RATE_BURST: u32 = 50;
/// Longest a session waits for its detached participant to be resumed or to leave (above any
/// sane resume grace period; the media plane decides first).
const LINGER_LIMIT: Duration = Duration::from_secs(300);

/// How a session's loop ended.
enum Exit {
    /// The client sent `leave`.
    Left,
    /// The media plane removed the participant, or handed it to another socket (`Resumed`).
    MediaClosed(confab_sfu::CloseReason),
    /// The socket is gone (closed, failed, idle): the participant may come back (`resume`).
    Lost,
    /// The participant's event queue closed without a `Closed` event: it was removed, or taken
    /// over by a resume whose `Closed(Resumed)` did not fit the queue ([`Attachment`] tells).
    Gone,
}

/// Longest a write of a media-plane event to the socket may wait (a dead peer's TCP window
/// stays shut): past it the socket counts as lost (the participant is detached and may
/// resume). Replies inside a request are dropped past it instead, and the idle timeout ends the
/// session.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

struct Joined {
    participant: ParticipantId,
    room: RoomId,
    events: confab_sfu::EventReceiver,
    chat: ChatParticipant,
    /// This socket's claim on the participant (a resume elsewhere ends it).
    attachment: Attachment,
    /// The paid session this socket already answered `paid_session` for (its own
    /// `session_started`): the broadcast of the same start is not sent twice.
    paid_announced: Option<confab_store::Uuid>,
}

/// Runs one signaling session to its end.
#[allow(clippy::too_many_arguments)] // one handle per subsystem the session reports to
pub async fn run(
    mut session: Session,
    mut stream: AggregatedMessageStream,
    sfu: SfuHandle,
    chat: ChatService,
    paid: Option<PaidHandle>,
    claims: Claims,
    ice: std::sync::Arc<crate::ice::IceServers>,
    hooks: confab_webhooks::Emitter,
    calls: CallService,
    max_total_participants: usize,
    slot: crate::limits::SocketSlot,
    cluster: Option<crate::cluster::Cluster>,
) {
    let mut paid_events = paid.as_ref().map(|p| p.subscribe());
    // Online from now: presence and call events come on `calls_rx`.
    let (socket_id, mut calls_rx) = match calls.connect(&claims.sub, &claims.name).await {
        Some(r) => (Some(r.socket), Some(r.events)),
        None => (None, None),
    };
    let mut joined: Option<Joined> = None;
    let mut last_heard = Instant::now();
    let mut limiter = TokenBucket::new(RATE_PER_S, RATE_BURST, Instant::now());
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut exit = Exit::Lost;
    // Cleared by the first join, resume, or presence/call/matching message.
    let mut join_deadline = Some(tokio::time::Instant::now() + JOIN_TIMEOUT);
    let close: Option<CloseReason> = loop {
        if joined.is_some() {
            join_deadline = None;
        }
        let idle_socket = async {
            match join_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let next_event = async {
            match joined.as_mut() {
                Some(j) => j.events.recv().await,
                None => std::future::pending().await,
            }
        };
        let next_paid_event = async {
            match paid_events.as_mut() {
                Some(rx) => rx.recv().await.ok(),
                None => std::future::pending().await,
            }
        };
        let next_call_event = async {
            match calls_rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = stream.recv() => {
                let Some(msg) = msg else { break None };
                last_heard = Instant::now();
                match msg {
                    Ok(AggregatedMessage::Text(text)) => {
                        let rid = request_id(&text);
                        if !limiter.allow(Instant::now()) {
                            send_with(&mut session, &ServerMessage::error(ErrorCode::RateLimited, "too many messages; slow down"), rid.as_ref()).await;
                            continue;
                        }
                        match parse_client_message(&text) {
                            Ok(m) if super::lobby::is_lobby_message(&m) => {
                                join_deadline = None;
                                let reply = match socket_id {
                                    Some(socket) => super::lobby::answer(m, &calls, &claims.sub, socket).await,
                                    None => ServerMessage::error(ErrorCode::Internal, "calls are not available"),
                                };
                                send_with(&mut session, &reply, rid.as_ref()).await;
                            }
                            Ok(m) if joined.is_none()
                                && matches!(m, ClientMessage::Join { .. } | ClientMessage::Resume { .. })
                                && slot.allow_join(Instant::now()).is_err() =>
                            {
                                send_with(&mut session, &ServerMessage::error(ErrorCode::RateLimited, "too many joins from your address or account; retry in a few seconds"), rid.as_ref()).await;
                            }
                            Ok(ClientMessage::Mute { .. } | ClientMessage::PublishOffer { .. })
                                if slot.allow_change(Instant::now()).is_err() =>
                            {
                                send_with(&mut session, &ServerMessage::error(ErrorCode::RateLimited, "too many mute or publish changes from your account; slow down"), rid.as_ref()).await;
                            }
                            Ok(m) => {
                                if let (Some(c), None) = (cluster.as_ref(), joined.as_ref()) {
                                    if let Some(redirect) = c.redirect(&m, claims.room.as_deref()).await {
                                        send_with(&mut session, &redirect, rid.as_ref()).await;
                                        continue;
                                    }
                                }
                                let joining = joined.is_none() && matches!(m, ClientMessage::Join { .. });
                                let mut out = Reply { session: &mut session, rid: rid.as_ref() };
                                if let Flow::Stop = handle(m, &mut out, &ice, &sfu, &chat, paid.as_ref(), &claims, &mut joined, max_total_participants).await {
                                    exit = Exit::Left;
                                    break Some(CloseCode::Normal.into());
                                }
                                if let (true, Some(j)) = (joining, joined.as_ref()) {
                                    hooks.participant_joined(j.room.as_str(), &j.participant.to_string(), &claims.sub, &j.chat.user_name);
                                }
                            }
                            Err((code, message)) => send_with(&mut session, &ServerMessage::error(code, message), rid.as_ref()).await,
                        }
                    }
                    Ok(AggregatedMessage::Binary(_)) => {
                        send(&mut session, &ServerMessage::error(ErrorCode::BadMessage, "binary frames are not part of the protocol")).await;
                    }
                    Ok(AggregatedMessage::Ping(p)) => {
                        let _ = session.pong(&p).await;
                    }
                    Ok(AggregatedMessage::Pong(_)) => {}
                    Ok(AggregatedMessage::Close(_)) => break None,
                    Err(e) => {
                        debug!("websocket protocol error: {e}");
                        send(&mut session, &ServerMessage::error(ErrorCode::BadMessage, format!("{e}"))).await;
                        break Some(CloseReason { code: CloseCode::Size, description: Some("frame too large or malformed".into()) });
                    }
                }
            }
            ev = next_event => {
                match ev {
                    Some(SfuEvent::Closed(reason)) => {
                        info!(?reason, "media plane closed the participant");
                        exit = Exit::MediaClosed(reason);
                        if reason == confab_sfu::CloseReason::Resumed {
                            break Some(CloseReason { code: CloseCode::Away, description: Some("resumed on another connection".into()) });
                        }
                        if reason == confab_sfu::CloseReason::Shutdown {
                            break Some(CloseReason { code: CloseCode::Away, description: Some("server shutting down".into()) });
                        }
                        let (code, why) = match reason {
                            confab_sfu::CloseReason::Removed => (ErrorCode::Removed, "a host removed you from this room"),
                            confab_sfu::CloseReason::TransportFailed => (ErrorCode::TransportFailed, "a transport failed (no ICE consent for 30 s, or ICE/DTLS never completed)"),
                            confab_sfu::CloseReason::ConnectTimeout => (ErrorCode::ConnectTimeout, "your publisher transport did not connect in time after joining; rejoin"),
                            confab_sfu::CloseReason::InternalError => (ErrorCode::Internal, "the server failed handling your connection; rejoin"),
                            confab_sfu::CloseReason::DataChannelBacklog => (ErrorCode::Internal, "your DataChannel stopped acknowledging what the server sent; rejoin"),
                            _ => (ErrorCode::Internal, "the server could not deliver events to this participant fast enough"),
                        };
                        send(&mut session, &ServerMessage::error(code, why)).await;
                        break Some(CloseReason { code: CloseCode::Away, description: Some(format!("{reason:?}")) });
                    }
                    Some(SfuEvent::DataChannelOpen { label }) => {
                        if let (Some(j), true) = (joined.as_mut(), label == CHAT_LABEL) {
                            chat.send_history(&j.chat, None, crate::chat::HISTORY_ON_JOIN).await;
                        }
                    }
                    Some(SfuEvent::DataMessage { label, text }) => {
                        if let (Some(j), true) = (joined.as_mut(), label == CHAT_LABEL) {
                            chat.on_message(&mut j.chat, &text).await;
                        }
                    }
                    Some(ev) => {
                        if let Some(m) = event_message(ev) {
                            let text = serde_json::to_string(&m).expect("serializable");
                            if !matches!(tokio::time::timeout(SEND_TIMEOUT, session.text(text)).await, Ok(Ok(()))) {
                                break None;
                            }
                        }
                    }
                    None => {
                        exit = Exit::Gone;
                        break Some(CloseCode::Away.into());
                    }
                }
            }
            Some(event) = next_paid_event => match event {
                PaidEvent::Ended(ended) => {
                    if joined.as_ref().is_some_and(|j| j.room.as_str() == ended.room) {
                        let m = ServerMessage::PaidSessionEnded { id: ended.id.to_string(), reason: ended.reason.as_str().to_owned() };
                        send(&mut session, &m).await;
                    }
                }
                PaidEvent::Started(info) => {
                    // Both parties see the badge at once (no polling); others in the room do not
                    // learn of the payment.
                    let party = parse_address(&claims.sub).is_ok_and(|a| a == info.student || a == info.tutor);
                    if let Some(j) = joined.as_mut().filter(|j| party && j.room.as_str() == info.room && j.paid_announced != Some(info.id)) {
                        j.paid_announced = Some(info.id);
                        send(&mut session, &paid_session_msg(&info)).await;
                    }
                }
            },
            Some(m) = next_call_event => send(&mut session, &m).await,
            () = idle_socket => {
                info!("socket neither joined nor used calls within {JOIN_TIMEOUT:?}: closing");
                send(&mut session, &ServerMessage::error(ErrorCode::JoinTimeout, "send join (or resume) within 10 s of opening the socket")).await;
                break Some(CloseReason { code: CloseCode::Policy, description: Some("join timeout".into()) });
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > IDLE_TIMEOUT {
                    info!("signaling socket idle: closing");
                    break Some(CloseReason { code: CloseCode::Policy, description: Some("idle".into()) });
                }
                if session.ping(b"").await.is_err() {
                    break None;
                }
            }
        }
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(close)).await;
    if let Some(socket) = socket_id {
        calls.disconnect(&claims.sub, socket).await;
    }
    let Some(mut j) = joined.take() else {
        return;
    };
    match exit {
        Exit::MediaClosed(confab_sfu::CloseReason::Resumed) => {
            info!(room = %j.room, participant = %j.participant, "participant resumed on another socket");
            return;
        }
        Exit::Gone if !j.attachment.is_current() => {
            info!(room = %j.room, participant = %j.participant, "participant resumed on another socket");
            return;
        }
        Exit::Lost => {
            sfu.detach(j.participant, &j.attachment).await;
            if !j.attachment.is_current() {
                info!(room = %j.room, participant = %j.participant, "participant resumed on another socket");
                return;
            }
            // The paid session's own grace (30 s by default, longer than the resume grace)
            // starts now: a resume comes back as `Joined` within it and is not a disconnect;
            // without one the session ends on time, as before resume existed.
            if let Some(p) = &paid {
                p.presence(&j.room, &claims.sub, Presence::Left).await;
            }
            if linger(&mut j.events, &j.attachment).await {
                info!(room = %j.room, participant = %j.participant, "participant resumed on another socket");
                return;
            }
            // Not resumed in time: the media plane has removed it (or, if its answer never came,
            // this makes sure).
            sfu.leave(j.participant).await;
            calls.left_room(&claims.sub, j.room.as_str(), false).await;
        }
        Exit::Left | Exit::MediaClosed(_) | Exit::Gone => {
            sfu.leave(j.participant).await;
            calls
                .left_room(&claims.sub, j.room.as_str(), matches!(exit, Exit::Left))
                .await;
            if let Some(p) = &paid {
                // Only a `leave` is on purpose (when every party has left so, the paid session
                // ends at once); a removal by the server is a disconnect and gets the grace.
                let what = match exit {
                    Exit::Left => Presence::LeftOnPurpose,
                    _ => Presence::Left,
                };
                p.presence(&j.room, &claims.sub, what).await;
            }
        }
    }
    chat.system(&j.chat, format!("{} left", j.chat.user_name))
        .await;
    let why = match exit {
        Exit::Left => confab_webhooks::LeaveReason::Left,
        Exit::Lost
        | Exit::MediaClosed(
            confab_sfu::CloseReason::TransportFailed | confab_sfu::CloseReason::ConnectTimeout,
        ) => confab_webhooks::LeaveReason::Disconnected,
        _ => confab_webhooks::LeaveReason::Closed,
    };
    hooks.participant_left(
        j.room.as_str(),
        &j.participant.to_string(),
        &claims.sub,
        &j.chat.user_name,
        why,
    );
    info!(room = %j.room, participant = %j.participant, "signaling session ended");
}

/// Waits on a detached participant's old event queue: `true` when it resumed on another socket,
/// `false` when the grace period ended (or the media plane went away). Other events are
/// dropped: the resumed session gets the room as it is then.
async fn linger(events: &mut confab_sfu::EventReceiver, attachment: &Attachment) -> bool {
    let wait = async {
        while let Some(ev) = events.recv().await {
            if let SfuEvent::Closed(reason) = ev {
                return reason == confab_sfu::CloseReason::Resumed;
            }
        }
        !attachment.is_current()
    };
    // The media plane ends it within the grace period; this bound only guards against a
    // media plane that never answers.
    tokio::time::timeout(LINGER_LIMIT, wait)
        .await
        .unwrap_or(false)
}

enum Flow {
    Continue,
    Stop,
}

/// Where a request's replies go: its socket, and the `request_id` they echo.
struct Reply<'a> {
    session: &'a mut Session,
    rid: Option<&'a serde_json::Value>,
}

impl Reply<'_> {
    async fn send(&mut self, m: &ServerMessage) {
        send_with(self.session, m, self.rid).await;
    }
}

/// Sends `m` and continues (for an early reply inside [`handle`]).
async fn reply_now(out: &mut Reply<'_>, m: ServerMessage) -> Flow {
    out.send(&m).await;
    Flow::Continue
}

/// Sends `m`, giving up after [`SEND_TIMEOUT`] (a dead peer; the idle timeout ends it).
async fn send(session: &mut Session, m: &ServerMessage) {
    send_with(session, m, None).await;
}

/// [`send`] with the `request_id` of the message `m` answers, if it had one.
async fn send_with(session: &mut Session, m: &ServerMessage, rid: Option<&serde_json::Value>) {
    let text = reply_text(m, rid);
    let _ = tokio::time::timeout(SEND_TIMEOUT, session.text(text)).await;
}

#[allow(clippy::too_many_arguments)] // one handle per subsystem a message may reach
async fn handle(
    m: ClientMessage,
    out: &mut Reply<'_>,
    ice: &crate::ice::IceServers,
    sfu: &SfuHandle,
    chat: &ChatService,
    paid: Option<&PaidHandle>,
    claims: &Claims,
    joined: &mut Option<Joined>,
    max_total_participants: usize,
) -> Flow {
    let reply = match (m, joined.as_mut()) {
        (ClientMessage::Ping { ts }, j) => {
            if let (Some(p), Some(j)) = (paid, j) {
                p.presence(&j.room, &claims.sub, Presence::Heartbeat).await;
            }
            Some(ServerMessage::Pong { ts })
        }
        (ClientMessage::Join { .. }, Some(_)) => Some(ServerMessage::error(
            ErrorCode::AlreadyJoined,
            "already in a room",
        )),
        (ClientMessage::Join { room, name }, None) => match RoomId::parse(&room) {
            Err(e) => Some(ServerMessage::error(ErrorCode::InvalidRoom, e.to_string())),
            Ok(_) if claims.room.as_deref().is_some_and(|r| r != room) => Some(
                ServerMessage::error(ErrorCode::Unauthorized, "this token is for another room"),
            ),
            Ok(_) if super::display_name(&name).is_none() => Some(ServerMessage::error(
                ErrorCode::InvalidName,
                "a name has 1 to 64 printable characters",
            )),
            Ok(_) if sfu.participants() >= max_total_participants as u64 => {
                Some(ServerMessage::error(
                    ErrorCode::ServerFull,
                    "this server has as many participants as it takes; try again later",
                ))
            }
            Ok(room_id) => {
                let (tx, rx) = confab_sfu::mailbox();
                match sfu
                    .join(
                        room_id.clone(),
                        name.trim().to_owned(),
                        claims.sub.clone(),
                        tx,
                    )
                    .await
                {
                    Ok(info) => {
                        let msg = ServerMessage::Joined {
                            room: room_id.to_string(),
                            participant_id: info.participant.to_string(),
                            participants: info.others.iter().map(participant_msg).collect(),
                            max_participants: info.max_participants,
                            resume_token: info.resume_token.clone(),
                            ice_servers: ice.for_user_now(&claims.sub),
                        };
                        let name = name.trim().to_owned();
                        let cp = ChatParticipant::new(
                            room_id.clone(),
                            info.participant,
                            claims.sub.clone(),
                            name.clone(),
                        );
                        out.send(&msg).await;
                        chat.system_in_background(&cp, format!("{name} joined"));
                        if let Some(p) = paid {
                            p.presence(&room_id, &claims.sub, Presence::Joined).await;
                        }
                        *joined = Some(Joined {
                            participant: info.participant,
                            room: room_id,
                            events: rx,
                            chat: cp,
                            attachment: info.attachment.clone(),
                            paid_announced: None,
                        });
                        None
                    }
                    Err(e) => Some(ServerMessage::error(super::error_code(&e), e.to_string())),
                }
            }
        },
        (ClientMessage::Resume { .. }, Some(_)) => Some(ServerMessage::error(
            ErrorCode::AlreadyJoined,
            "already in a room",
        )),
        (
            ClientMessage::Resume {
                participant_id,
                resume_token,
            },
            None,
        ) => {
            let Some(pid) = ParticipantId::parse(&participant_id) else {
                return reply_now(
                    out,
                    ServerMessage::error(ErrorCode::ResumeFailed, "no such participant"),
                )
                .await;
            };
            let (tx, rx) = confab_sfu::mailbox();
            match sfu.resume(pid, resume_token, claims.sub.clone(), tx).await {
                Ok(info) => {
                    let msg = ServerMessage::Resumed {
                        room: info.room.to_string(),
                        participant_id: pid.to_string(),
                        participants: info.join.others.iter().map(participant_msg).collect(),
                        max_participants: info.join.max_participants,
                        resume_token: info.join.resume_token.clone(),
                        ice_servers: ice.for_user_now(&claims.sub),
                    };
                    out.send(&msg).await;
                    if let Some(p) = paid {
                        p.presence(&info.room, &claims.sub, Presence::Joined).await;
                    }
                    let cp =
                        ChatParticipant::new(info.room.clone(), pid, claims.sub.clone(), info.name);
                    *joined = Some(Joined {
                        participant: pid,
                        room: info.room,
                        events: rx,
                        chat: cp,
                        attachment: info.join.attachment,
                        paid_announced: None,
                    });
                    None
                }
                Err(e) => Some(ServerMessage::error(super::error_code(&e), e.to_string())),
            }
        }
        (ClientMessage::Leave, _) => return Flow::Stop,
        (_, None) => Some(ServerMessage::error(
            ErrorCode::NotJoined,
            "send join first",
        )),
        (m, Some(j)) if super::host::is_host_message(&m) => {
            super::host::control(m, claims, sfu, j.participant).await
        }
        // A viewer still connects its publisher transport, for the chat DataChannel (and the
        // connect timeout): an offer that declares no track publishes nothing.
        (ClientMessage::PublishOffer { tracks, .. }, Some(_))
            if claims.role == crate::auth::Role::Viewer && !tracks.is_empty() =>
        {
            Some(ServerMessage::error(
                ErrorCode::NotAllowed,
                "a viewer token may not publish tracks",
            ))
        }
        (ClientMessage::PublishOffer { sdp, tracks }, Some(j)) => {
            if sdp.len() > MAX_SDP_BYTES {
                Some(ServerMessage::error(
                    ErrorCode::SdpTooLarge,
                    format!("an SDP has at most {MAX_SDP_BYTES} bytes"),
                ))
            } else if let Some(bad) = tracks.iter().find(|t| kind_of(t.source) != t.kind) {
                Some(ServerMessage::error(
                    ErrorCode::InvalidSdp,
                    format!(
                        "track {} declares kind {:?} for source {:?}",
                        bad.mid, bad.kind, bad.source
                    ),
                ))
            } else {
                let tracks = tracks
                    .into_iter()
                    .map(|t| PublishTrack {
                        mid: t.mid,
                        source: source_in(t.source),
                    })
                    .collect();
                match sfu.publish_offer(j.participant, sdp, tracks).await {
                    Ok(answer) => Some(ServerMessage::PublishAnswer { sdp: answer }),
                    Err(e) => Some(ServerMessage::error(super::error_code(&e), e.to_string())),
                }
            }
        }
        (ClientMessage::SubscribeAnswer { sdp }, Some(j)) => {
            if sdp.len() > MAX_SDP_BYTES {
                Some(ServerMessage::error(
                    ErrorCode::SdpTooLarge,
                    format!("an SDP has at most {MAX_SDP_BYTES} bytes"),
                ))
            } else {
                match sfu.subscribe_answer(j.participant, sdp).await {
                    Ok(()) => None,
                    Err(e) => Some(ServerMessage::error(super::error_code(&e), e.to_string())),
                }
            }
        }
        (ClientMessage::RestartIce { target }, Some(j)) => match target {
            Target::Subscriber => match sfu.restart_ice(j.participant).await {
                Ok(()) => None,
                Err(e) => Some(ServerMessage::error(super::error_code(&e), e.to_string())),
            },
            Target::Publisher => Some(ServerMessage::error(
                ErrorCode::BadJson,
                "restart the publisher transport with an ICE-restart publish_offer",
            )),
        },
        (ClientMessage::Candidate { target, candidate }, Some(j)) => {
            let role = match target {
                Target::Publisher => TransportRole::Publisher,
                Target::Subscriber => TransportRole::Subscriber,
            };
            match sfu
                .candidate(
                    j.participant,
                    role,
                    candidate.candidate,
                    candidate.sdp_mid,
                    candidate.sdp_mline_index,
                )
                .await
            {
                Ok(()) => None,
                Err(e) => Some(ServerMessage::error(super::error_code(&e), e.to_string())),
            }
        }
        (ClientMessage::SessionStarted { tutor, language }, Some(j)) => Some(match paid {
            None => ServerMessage::error(
                ErrorCode::PaidSessionsDisabled,
                "this server has no chain settings",
            ),
            Some(p) => match (parse_address(&claims.sub), parse_address(&tutor)) {
                (Err(_), _) => ServerMessage::error(
                    ErrorCode::NotAParty,
                    "your token's subject is not a wallet address",
                ),
                (_, Err(e)) => ServerMessage::error(ErrorCode::BadJson, e.to_string()),
                (Ok(student), Ok(tutor)) => {
                    match p.start(&j.room, student, tutor, language).await {
                        Ok(info) => {
                            j.paid_announced = Some(info.id);
                            paid_session_msg(&info)
                        }
                        Err(e) => ServerMessage::error(paid_error_code(&e), e.client_message()),
                    }
                }
            },
        }),
        (ClientMessage::EndSession, Some(j)) => {
            if let Some(p) = paid {
                p.presence(&j.room, &claims.sub, Presence::EndPressed).await;
            }
            None
        }
        (ClientMessage::Mute { source, muted }, Some(j)) => {
            sfu.mute(j.participant, source_in(source), muted).await;
            None
        }
        (
            ClientMessage::TrackSettings {
                track_id,
                enabled,
                width,
                height,
            },
            Some(j),
        ) => match TrackId::parse(&track_id) {
            None => Some(ServerMessage::error(
                ErrorCode::BadJson,
                "track_id is not a track id",
            )),
            Some(track) => {
                let settings = TrackSettings {
                    enabled,
                    size: width.zip(height),
                };
                match sfu.track_settings(j.participant, track, settings).await {
                    Ok(()) => None,
                    Err(e) => Some(ServerMessage::error(super::error_code(&e), e.to_string())),
                }
            }
        },
        // Answered by the session loop before it gets here (`lobby::answer`).
        // Presence, call and matching messages (`lobby`) are answered by the session loop
        // before they get here, host controls above: nothing else reaches this arm.
        (m, Some(_)) => {
            debug_assert!(super::lobby::is_lobby_message(&m) || super::host::is_host_message(&m));
            None
        }
    };
    if let Some(r) = reply {
        out.send(&r).await;
    }
    Flow::Continue
}

//! confab's signaling wire protocol: every JSON message, as serde enums. `docs/protocol.md` is the
//! human description of the same thing; change both together. Shared by the server, the test
//! client and the load generator.
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// Largest accepted SDP, bytes (64 KiB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Largest accepted WebSocket text frame, bytes (128 KiB).
pub const MAX_FRAME_BYTES: usize = 128 * 1024;

/// A track source on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Microphone (audio).
    Microphone,
    /// Camera (video).
    Camera,
    /// Screen share (video).
    Screen,
}

/// A media kind on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// Which transport a trickled candidate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The publisher transport (client offers).
    Publisher,
    /// The subscriber transport (server offers).
    Subscriber,
}

/// One sending m-line of a `publish_offer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishTrackMsg {
    /// `a=mid` of the m-line.
    pub mid: String,
    /// Audio or video (must match the source).
    pub kind: Kind,
    /// What it captures.
    pub source: Source,
}

/// A trickled ICE candidate, as `RTCIceCandidateInit` (W3C WebRTC section 4.8.1.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateMsg {
    /// `candidate:…` attribute, or empty for end-of-candidates.
    pub candidate: String,
    /// The m-line's mid.
    #[serde(rename = "sdpMid", default)]
    pub sdp_mid: Option<String>,
    /// The m-line's index.
    #[serde(rename = "sdpMLineIndex", default)]
    pub sdp_mline_index: Option<u16>,
}

/// Client → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Join (and create when empty) a room.
    Join {
        /// Room id, 1–64 of `[A-Za-z0-9_-]`.
        room: String,
        /// Display name, 1–64 characters.
        name: String,
    },
    /// Offer for the publisher transport.
    PublishOffer {
        /// SDP offer, at most [`MAX_SDP_BYTES`].
        sdp: String,
        /// What each sending m-line carries.
        #[serde(default)]
        tracks: Vec<PublishTrackMsg>,
    },
    /// Answer to the last `subscribe_offer`.
    SubscribeAnswer {
        /// SDP answer, at most [`MAX_SDP_BYTES`].
        sdp: String,
    },
    /// A trickled ICE candidate of the client.
    Candidate {
        /// The transport it belongs to.
        target: Target,
        /// The candidate.
        candidate: CandidateMsg,
    },
    /// Mute state of one of the client's sources.
    Mute {
        /// The source.
        source: Source,
        /// Muted or not.
        muted: bool,
    },
    /// How the client wants one track it receives: `enabled: false` stops the server forwarding
    /// it to this client (a hidden tile, audio-only mode) until it is enabled again (video then
    /// restarts on a keyframe). `width`/`height`: the size in CSS px of the tile it renders in,
    /// for layer selection.
    TrackSettings {
        /// The remote track (`<participant>-<mid>`, as in `subscribe_offer`).
        track_id: String,
        /// Forward it (`true`, the default for every track) or not.
        enabled: bool,
        /// Rendered width in px, if known.
        #[serde(default)]
        width: Option<u32>,
        /// Rendered height in px, if known.
        #[serde(default)]
        height: Option<u32>,
    },
    /// The student started a paid session on chain (`startSession(tutor, language)` mined): the
    /// server checks `activeSessions(tutor)` and tracks the session in this room. The student's
    /// address is the `sub` of their token.
    SessionStarted {
        /// The tutor's address (`0x…`).
        tutor: String,
        /// The contract's language id.
        language: u8,
    },
    /// The End button: ends the room's paid session now (student or tutor only).
    EndSession,
    /// Come back on a new socket as the participant `joined` named, within the resume grace
    /// period, instead of `join`; the access token must be the same user's. Answered by
    /// `resumed` (a `subscribe_offer` left unanswered on the old socket is sent again; a client
    /// whose transports did not survive restarts ICE: an ICE-restart `publish_offer`, and
    /// `restart_ice` for the subscriber) or `error` `resume_failed` (join afresh).
    Resume {
        /// The `participant_id` of the earlier `joined`.
        participant_id: String,
        /// The `resume_token` of the earlier `joined`.
        resume_token: String,
    },
    /// Ask for an ICE restart of a transport the server offers (the subscriber): it answers with
    /// a `subscribe_offer` carrying new ICE credentials. (The publisher transport is restarted
    /// by the client's own `publish_offer`.)
    RestartIce {
        /// Must be `subscriber`.
        target: Target,
    },
    /// Leave the room.
    Leave,
    /// Follow who is online: answered by `presence_snapshot`, then a `presence` on each change.
    /// Allowed before `join` (a lobby socket).
    WatchPresence,
    /// Ring `callee` (a user id, the `sub` of their token). Answered by `call_ringing`, or at once
    /// by `call_ended` (`missed`/`offline`: nobody of that user is connected; `rejected`/`busy`:
    /// they are in a call). Allowed before `join`.
    CallInvite {
        /// The user to call.
        callee: String,
    },
    /// The callee takes the call: both sides get `call_accepted` with the call's room.
    CallAccept {
        /// From `call_incoming`.
        call_id: String,
    },
    /// The callee declines: both sides get `call_ended` (`rejected`).
    CallReject {
        /// From `call_incoming`.
        call_id: String,
    },
    /// The caller gives up before an answer: both sides get `call_ended` (`missed`/`cancelled`).
    CallCancel {
        /// From `call_ringing`.
        call_id: String,
    },
    /// Either side ends an answered call (`ended`/`hangup`); while it still rings, it is a
    /// cancel (caller) or a reject (callee).
    CallHangup {
        /// The call.
        call_id: String,
    },
    /// A host (a `host` token) mutes another participant's track in its room: the server
    /// forwards none of it until that participant unmutes it itself.
    HostMute {
        /// Whose track.
        participant_id: String,
        /// Which one.
        source: Source,
    },
    /// A host removes a participant from its room; that user may not join it again while it is
    /// open.
    HostRemove {
        /// Who.
        participant_id: String,
    },
    /// A host locks (`true`) or unlocks its room: while locked, nobody new joins.
    HostLock {
        /// Locked or not.
        locked: bool,
    },
    /// "Talk to someone": wait to be paired with another user who asked the same (never
    /// yourself, never the partner of your last match). Answered by `match_waiting` or, when
    /// someone waits already, `match_found` (to both). Allowed before `join`.
    MatchStart,
    /// Leave the matching queue at once: answered by `match_stopped`.
    MatchStop,
    /// Heartbeat.
    Ping {
        /// Echoed in the `pong`.
        #[serde(default)]
        ts: Option<f64>,
    },
}

/// A track as sent to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackMsg {
    /// `<participant>-<mid>`.
    pub id: String,
    /// Audio or video.
    pub kind: Kind,
    /// What it captures.
    pub source: Source,
    /// Muted by its publisher.
    pub muted: bool,
}

/// A participant as sent to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantMsg {
    /// `p<n>`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Published tracks.
    pub tracks: Vec<TrackMsg>,
}

/// One entry of `active_speakers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveSpeakerMsg {
    /// The speaking participant (`p<n>`).
    pub participant_id: String,
    /// Smoothed loudness of their speech, 0..1 (1 = 0 dBov, the loudest; 0 = -127 dBov).
    pub level: f32,
}

/// One m-line of a `subscribe_offer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribedTrackMsg {
    /// Subscriber transport `a=mid`.
    pub mid: String,
    /// The publisher.
    pub participant_id: String,
    /// The remote track id.
    pub track_id: String,
    /// What it captures.
    pub source: Source,
    /// Audio or video.
    pub kind: Kind,
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// You are in.
    Joined {
        /// The room.
        room: String,
        /// Your id.
        participant_id: String,
        /// The others, in join order.
        participants: Vec<ParticipantMsg>,
        /// The room's capacity.
        max_participants: usize,
        /// Lets this participant come back on a new socket within the grace period (`resume`).
        /// Opaque, 32 characters; keep it secret.
        resume_token: String,
        /// ICE servers for both transports' `RTCConfiguration.iceServers` (only when the
        /// operator configured some: confab needs none). TURN entries carry time-limited
        /// credentials.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServerMsg>,
    },
    /// Answer to `resume`: you are back in `room` as `participant_id`; `participants` is the
    /// room as it is now.
    Resumed {
        /// The room.
        room: String,
        /// Your id (as before).
        participant_id: String,
        /// The others, in join order.
        participants: Vec<ParticipantMsg>,
        /// The room's capacity.
        max_participants: usize,
        /// The same resume token.
        resume_token: String,
        /// As in `joined` (fresh TURN credentials).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServerMsg>,
    },
    /// Someone's signaling socket is gone; they may come back within the grace period (their
    /// media may pause). A `participant_left` follows if they do not.
    ParticipantReconnecting {
        /// Who.
        participant_id: String,
    },
    /// That participant is back.
    ParticipantReconnected {
        /// Who.
        participant_id: String,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: ParticipantMsg,
    },
    /// Someone left.
    ParticipantLeft {
        /// Who.
        participant_id: String,
    },
    /// A track was published.
    TrackPublished {
        /// By whom.
        participant_id: String,
        /// The track.
        track: TrackMsg,
    },
    /// A track ended.
    TrackUnpublished {
        /// Whose.
        participant_id: String,
        /// Which.
        track_id: String,
    },
    /// Mute state changed.
    TrackMuted {
        /// Whose.
        participant_id: String,
        /// Which.
        track_id: String,
        /// Its source.
        source: Source,
        /// New state.
        muted: bool,
    },
    /// Answer for the publisher transport.
    PublishAnswer {
        /// SDP answer.
        sdp: String,
    },
    /// Offer for the subscriber transport.
    SubscribeOffer {
        /// SDP offer.
        sdp: String,
        /// What each m-line carries.
        tracks: Vec<SubscribedTrackMsg>,
    },
    /// The room's paid session is being tracked (answer to `session_started`).
    PaidSession {
        /// The paid session.
        session: PaidSessionMsg,
    },
    /// The room's paid session ended; settlement on chain follows (poll
    /// `GET /api/rooms/{room}/paid-session` for its status).
    PaidSessionEnded {
        /// Its id.
        id: String,
        /// `participant_ended`, `disconnected`, `heartbeat_timeout` or `shutdown`.
        reason: String,
    },
    /// Who is online now (answer to `watch_presence`), the watcher's own user left out.
    PresenceSnapshot {
        /// Online users.
        users: Vec<PresenceMsg>,
    },
    /// A user came online, went offline, or became (un)available.
    Presence {
        /// The user.
        user: PresenceMsg,
        /// `false`: its last socket closed.
        online: bool,
    },
    /// Your call rings at the callee (sent to each of the caller's sockets).
    CallRinging {
        /// The call.
        call_id: String,
        /// The callee's user id.
        callee: String,
    },
    /// Someone calls you (sent to each of the callee's sockets): answer with `call_accept` or
    /// `call_reject`; unanswered, it ends as `missed`/`no_answer` after the ring timeout.
    CallIncoming {
        /// The call.
        call_id: String,
        /// The caller's user id.
        caller: String,
        /// The caller's display name (from their token).
        caller_name: String,
    },
    /// The call was answered: both sides join `room` (a fresh one for this call).
    CallAccepted {
        /// The call.
        call_id: String,
        /// The room to `join`.
        room: String,
    },
    /// The call is over (sent to every socket of both sides).
    CallEnded {
        /// The call.
        call_id: String,
        /// The record's final status: `ended`, `rejected` or `missed`.
        status: String,
        /// Why: `hangup`, `disconnected` (ended); `rejected`, `busy` (rejected); `no_answer`,
        /// `cancelled`, `offline`, `caller_gone`, `callee_gone` (missed).
        reason: String,
        /// Who ended it (a user id), when someone did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Answered calls: from the answer to the end, s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_s: Option<u64>,
    },
    /// A host muted your `source`: the server forwards none of it until you unmute it (a
    /// `mute` with `muted: false`).
    MutedByHost {
        /// Which of your tracks.
        source: Source,
    },
    /// Nobody receives your `source` now (every subscriber disabled it with `track_settings`):
    /// stop encoding it (`paused: true`) until told otherwise. Only sent to a publisher whose
    /// track has subscribers; a participant alone in a room is never paused.
    PublisherPaused {
        /// Your track's source.
        source: Source,
        /// Stop (`true`) or resume sending it.
        paused: bool,
    },
    /// Of your simulcast `source`, send only the layers named (RIDs): the others no subscriber
    /// wants now. Sent on a change; the lowest layer is always among them.
    PublisherLayers {
        /// Your track's source.
        source: Source,
        /// The RIDs to keep sending.
        rids: Vec<String>,
    },
    /// A host locked or unlocked the room (to everyone in it).
    RoomLocked {
        /// Locked or not.
        locked: bool,
    },
    /// Who is speaking, from the microphones' RFC 6464 audio levels: the dominant speaker
    /// first, at most 3, empty when nobody speaks. Sent to everyone in the room when the list
    /// changes (at most every 500 ms).
    ActiveSpeakers {
        /// The speakers, dominant first.
        speakers: Vec<ActiveSpeakerMsg>,
    },
    /// You wait in the matching queue (answer to `match_start`).
    MatchWaiting,
    /// You were paired: both `join` `room`, a fresh one for the two of you.
    MatchFound {
        /// The room to `join`.
        room: String,
        /// The partner's user id.
        partner: String,
        /// The partner's display name.
        partner_name: String,
    },
    /// You left the matching queue (answer to `match_stop`).
    MatchStopped,
    /// A refusal.
    Error {
        /// Stable code (`docs/protocol.md`).
        code: ErrorCode,
        /// Human text.
        message: String,
    },
    /// Heartbeat answer.
    Pong {
        /// Echo of the ping's `ts`.
        #[serde(skip_serializing_if = "Option::is_none")]
        ts: Option<f64>,
    },
    /// Answer to `join` on a node of a cluster when another node hosts the room: open a new
    /// WebSocket to `url` (the hosting node's base URL, `http(s)://host[:port]`; the socket is
    /// `ws(s)://host[:port]/ws`) with the same token and send the same `join` there. Nothing was
    /// joined here.
    Redirect {
        /// The hosting node's base URL.
        url: String,
        /// The room, as joined.
        room: String,
    },
}

/// An online user as sent to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceMsg {
    /// User id (the `sub` of their token).
    pub user_id: String,
    /// Display name (from their token).
    pub name: String,
    /// Online and not in a call (ringing or answered).
    pub available: bool,
}

/// A paid session as sent to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaidSessionMsg {
    /// Server id.
    pub id: String,
    /// Student address (checksummed).
    pub student: String,
    /// Tutor address (checksummed).
    pub tutor: String,
    /// Language id.
    pub language: u8,
    /// The contract's session id (decimal).
    pub chain_session_id: String,
    /// Price, token units per second (decimal).
    pub rate_per_second: String,
    /// Start on chain, Unix seconds.
    pub started_at: u64,
}

/// Stable error codes (`docs/protocol.md`, "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or required fields missing.
    BadJson,
    /// Binary or oversized frame.
    BadMessage,
    /// Unknown `type`.
    UnknownType,
    /// A message other than join/ping before join.
    NotJoined,
    /// A second join.
    AlreadyJoined,
    /// Room id outside the rules.
    InvalidRoom,
    /// Name outside the rules.
    InvalidName,
    /// The room is full.
    RoomFull,
    /// SDP over 64 KiB.
    SdpTooLarge,
    /// SDP that does not parse or apply.
    InvalidSdp,
    /// Candidate that does not parse.
    InvalidCandidate,
    /// Offer/answer out of order.
    NegotiationFailed,
    /// Too many messages.
    RateLimited,
    /// Token missing, invalid or expired.
    Unauthorized,
    /// Server fault.
    Internal,
    /// Paid sessions need chain settings this server does not have.
    PaidSessionsDisabled,
    /// The chain shows no matching active session.
    PaidSessionNotFound,
    /// The chain (RPC) did not answer; retry.
    ChainUnavailable,
    /// Only the student or the tutor may do this.
    NotAParty,
    /// The tutor already has a paid session running (in another room).
    TutorBusy,
    /// The room already has a paid session running: it must end before another starts there.
    PaidSessionRunning,
    /// The database did not answer; retry.
    Unavailable,
    /// `resume` named no participant that could be resumed (it left, its grace period ended, or
    /// the token is wrong): send `join`.
    ResumeFailed,
    /// A transport of this participant failed (no ICE consent for 30 s, RFC 7675, or ICE or DTLS
    /// never completed): the server closes the socket; rejoin.
    TransportFailed,
    /// No call with that id is yours in a state that allows this (it ended, it is not ringing,
    /// you are not the side that may do this).
    CallNotFound,
    /// `call_invite` named no valid user (empty, over 128 bytes, or yourself).
    InvalidCallee,
    /// You are in a call already (ringing or answered): hang up first.
    InCall,
    /// Your token's role does not allow this (a `viewer` publishing, a non-host's host control).
    NotAllowed,
    /// The room is locked by a host: nobody new joins.
    RoomLocked,
    /// A host removed you from this room: you may not join it again while it is open.
    Removed,
    /// The socket neither joined a room nor used presence, calls or matching within 10 s of
    /// opening: it is closed.
    JoinTimeout,
    /// The server holds `--max-total-participants` already: try later.
    ServerFull,
    /// The participant's publisher transport did not connect (ICE and DTLS up) within
    /// `--connect-timeout-s` (20 s) of its `join`: it was removed to free its place; rejoin.
    ConnectTimeout,
    /// `track_settings` named a track you do not receive.
    UnknownTrack,
}

impl ServerMessage {
    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

/// One entry of `RTCConfiguration.iceServers` (W3C webrtc-pc section 4.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServerMsg {
    /// `stun:`, `turn:` or `turns:` URLs (RFC 7064, RFC 7065).
    pub urls: Vec<String>,
    /// TURN only: `<expiry, unix seconds>:<user id>` (TURN REST API convention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN only: the time-limited password, `base64(HMAC-SHA1(secret, username))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Longest `request_id` echoed, in bytes (a longer one is ignored).
pub const MAX_REQUEST_ID: usize = 64;

/// The optional `request_id` of a client message: a string of at most [`MAX_REQUEST_ID`]
/// bytes or an integer, echoed verbatim in the reply (or error) that message causes, so a
/// client can match them. `None` when absent, of another type, too long, or the text is not a
/// JSON object.
pub fn request_id(text: &str) -> Option<serde_json::Value> {
    #[derive(Deserialize)]
    struct Only {
        #[serde(default)]
        request_id: Option<serde_json::Value>,
    }
    let id = serde_json::from_str::<Only>(text).ok()?.request_id?;
    match &id {
        serde_json::Value::String(s) if s.len() <= MAX_REQUEST_ID => Some(id),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(id),
        _ => None,
    }
}

/// `m` as JSON text, with `request_id` (from [`request_id`]) added when there is one.
pub fn reply_text(m: &ServerMessage, request_id: Option<&serde_json::Value>) -> String {
    match request_id {
        None => serde_json::to_string(m).expect("serializable"),
        Some(id) => {
            let mut v = serde_json::to_value(m).expect("serializable");
            if let serde_json::Value::Object(o) = &mut v {
                o.insert("request_id".into(), id.clone());
            }
            v.to_string()
        }
    }
}

impl ClientMessage {
    /// Every client message's wire `type`, as [`ClientMessage::type_name`] gives them.
    pub const TYPES: [&'static str; 23] = [
        "join",
        "resume",
        "restart_ice",
        "publish_offer",
        "subscribe_answer",
        "candidate",
        "mute",
        "track_settings",
        "session_started",
        "end_session",
        "leave",
        "ping",
        "watch_presence",
        "call_invite",
        "call_accept",
        "call_reject",
        "call_cancel",
        "call_hangup",
        "match_start",
        "match_stop",
        "host_mute",
        "host_remove",
        "host_lock",
    ];

    /// This message's wire `type` (the serde tag; `tests/fuzz_signaling.rs` checks that they
    /// agree and that [`ClientMessage::TYPES`] holds each).
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::PublishOffer { .. } => "publish_offer",
            ClientMessage::SubscribeAnswer { .. } => "subscribe_answer",
            ClientMessage::Candidate { .. } => "candidate",
            ClientMessage::Mute { .. } => "mute",
            ClientMessage::TrackSettings { .. } => "track_settings",
            ClientMessage::SessionStarted { .. } => "session_started",
            ClientMessage::EndSession => "end_session",
            ClientMessage::Resume { .. } => "resume",
            ClientMessage::RestartIce { .. } => "restart_ice",
            ClientMessage::Leave => "leave",
            ClientMessage::WatchPresence => "watch_presence",
            ClientMessage::CallInvite { .. } => "call_invite",
            ClientMessage::CallAccept { .. } => "call_accept",
            ClientMessage::CallReject { .. } => "call_reject",
            ClientMessage::CallCancel { .. } => "call_cancel",
            ClientMessage::CallHangup { .. } => "call_hangup",
            ClientMessage::HostMute { .. } => "host_mute",
            ClientMessage::HostRemove { .. } => "host_remove",
            ClientMessage::HostLock { .. } => "host_lock",
            ClientMessage::MatchStart => "match_start",
            ClientMessage::MatchStop => "match_stop",
            ClientMessage::Ping { .. } => "ping",
        }
    }
}

/// Parses one text frame. Distinguishes an unknown `type` (valid JSON object with a `type` we do
/// not know) from malformed JSON.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, (ErrorCode, String)> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(m) => Ok(m),
        Err(e) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(o)) => match o.get("type").and_then(|t| t.as_str()) {
                Some(t) if !ClientMessage::TYPES.contains(&t) => Err((
                    ErrorCode::UnknownType,
                    format!("unknown message type {t:?}"),
                )),
                Some(_) => Err((ErrorCode::BadJson, format!("invalid message: {e}"))),
                None => Err((
                    ErrorCode::BadJson,
                    "a message needs a string \"type\"".into(),
                )),
            },
            Ok(_) => Err((ErrorCode::BadJson, "a message is a JSON object".into())),
            Err(e) => Err((ErrorCode::BadJson, format!("not JSON: {e}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_messages_parse_and_unknown_types_are_told_apart_from_bad_json() {
        assert_eq!(
            parse_client_message(r#"{"type":"join","room":"r","name":"n"}"#),
            Ok(ClientMessage::Join {
                room: "r".into(),
                name: "n".into()
            })
        );
        assert_eq!(
            parse_client_message(r#"{"type":"leave"}"#),
            Ok(ClientMessage::Leave)
        );
        assert_eq!(
            parse_client_message(r#"{"type":"dance"}"#).unwrap_err().0,
            ErrorCode::UnknownType
        );
        assert_eq!(
            parse_client_message(r#"{"type":"call_invite","callee":"bob"}"#),
            Ok(ClientMessage::CallInvite {
                callee: "bob".into()
            })
        );
        assert_eq!(
            parse_client_message(r#"{"type":"call_accept"}"#)
                .unwrap_err()
                .0,
            ErrorCode::BadJson,
            "a known type without its fields"
        );
        assert_eq!(
            parse_client_message(r#"{"type":"join"}"#).unwrap_err().0,
            ErrorCode::BadJson
        );
        assert_eq!(
            parse_client_message("{nope").unwrap_err().0,
            ErrorCode::BadJson
        );
        assert_eq!(
            parse_client_message("[1]").unwrap_err().0,
            ErrorCode::BadJson
        );
    }

    #[test]
    fn server_messages_use_snake_case_tags() {
        let s = serde_json::to_string(&ServerMessage::error(ErrorCode::RoomFull, "full")).unwrap();
        assert_eq!(s, r#"{"type":"error","code":"room_full","message":"full"}"#);
        let s = serde_json::to_string(&ServerMessage::Pong { ts: None }).unwrap();
        assert_eq!(s, r#"{"type":"pong"}"#);
    }

    #[test]
    fn candidates_use_the_browser_field_names() {
        let m = parse_client_message(
            r#"{"type":"candidate","target":"publisher","candidate":{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        )
        .unwrap();
        match m {
            ClientMessage::Candidate { target, candidate } => {
                assert_eq!(target, Target::Publisher);
                assert_eq!(candidate.sdp_mid.as_deref(), Some("0"));
                assert_eq!(candidate.sdp_mline_index, Some(0));
            }
            other => panic!("{other:?}"),
        }
    }
    #[test]
    fn a_request_id_is_echoed_only_when_it_is_a_short_string_or_an_integer() {
        assert_eq!(
            request_id(r#"{"type":"ping","request_id":"a1"}"#),
            Some(serde_json::json!("a1"))
        );
        assert_eq!(
            request_id(r#"{"type":"ping","request_id":7}"#),
            Some(serde_json::json!(7))
        );
        assert_eq!(request_id(r#"{"type":"ping"}"#), None);
        assert_eq!(request_id(r#"{"type":"ping","request_id":{"x":1}}"#), None);
        assert_eq!(request_id(r#"{"type":"ping","request_id":1.5}"#), None);
        let long = format!(r#"{{"type":"ping","request_id":"{}"}}"#, "x".repeat(65));
        assert_eq!(request_id(&long), None);
        assert_eq!(request_id("not json"), None);
        let text = reply_text(
            &ServerMessage::Pong { ts: Some(3.0) },
            Some(&serde_json::json!("a1")),
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "pong");
        assert_eq!(v["request_id"], "a1");
        assert!(!reply_text(&ServerMessage::Pong { ts: None }, None).contains("request_id"));
    }
}

/// The chat protocol: JSON text messages on the `chat` DataChannel (ordered, reliable) of the
/// publisher transport. See `docs/protocol.md`, "Chat".
pub mod chat {
    use serde::{Deserialize, Serialize};

    /// Client → server on the `chat` DataChannel.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum ChatClientMessage {
        /// Send a message. A resend with the same `client_msg_id` is acknowledged again,
        /// never stored twice.
        Send {
            /// The sender's id for the message, 1–64 characters, unique per room.
            client_msg_id: String,
            /// The text, 1–4096 bytes of UTF-8.
            text: String,
        },
        /// Edit one of your own messages.
        Edit {
            /// Server id of the message.
            id: String,
            /// New text.
            text: String,
        },
        /// Delete one of your own messages.
        Delete {
            /// Server id of the message.
            id: String,
        },
        /// Ask for older messages than `before` (server id), at most `limit` (≤ 200).
        History {
            /// Only messages older than this one.
            #[serde(default)]
            before: Option<String>,
            /// How many, default 50.
            #[serde(default)]
            limit: Option<u32>,
        },
    }

    /// A stored chat message.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ChatMessage {
        /// Server id (UUID v7: sorts by time).
        pub id: String,
        /// Author's user id.
        pub user_id: String,
        /// Author's display name.
        pub user_name: String,
        /// Text ("" once deleted).
        pub text: String,
        /// `text`, `system` or `file`.
        pub message_type: String,
        /// The sender's id for it.
        pub client_msg_id: String,
        /// RFC 3339 creation time.
        pub created_at: String,
        /// RFC 3339 time of the last edit, if edited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub edited_at: Option<String>,
        /// Deleted by its author.
        #[serde(default)]
        pub deleted: bool,
    }

    /// Server → client on the `chat` DataChannel.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum ChatServerMessage {
        /// The latest messages (on join), or the page asked for, oldest first.
        /// Long histories come in several parts (each at most ~32 KiB); `done` marks the last.
        History {
            /// Messages, oldest first.
            messages: Vec<ChatMessage>,
            /// Whether older messages exist (before the first of all parts).
            has_more: bool,
            /// The last part of this history answer.
            done: bool,
        },
        /// Your message is stored (committed) under `message.id`.
        Ack {
            /// Echo of your id.
            client_msg_id: String,
            /// The stored message.
            message: ChatMessage,
        },
        /// Someone else's new message (or a system message).
        Message {
            /// The message.
            message: ChatMessage,
        },
        /// A message was edited.
        Edited {
            /// The message after the edit.
            message: ChatMessage,
        },
        /// A message was deleted.
        Deleted {
            /// Its server id.
            id: String,
        },
        /// A chat request was refused.
        Error {
            /// Stable code: `chat_unavailable` (storage down: retry with the same
            /// client_msg_id), `rate_limited`, `empty`, `too_long`, `not_author`, `not_found`,
            /// `deleted`, `bad_json`, `bad_request` (also: a control character other than
            /// newline and tab in the text), `internal` (a server fault: do not retry).
            code: String,
            /// Human text.
            message: String,
            /// The `client_msg_id` of the refused `send`, if any.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            client_msg_id: Option<String>,
        },
    }
}

//! WHIP ingest (RFC 9725): OBS, GStreamer, ffmpeg and any WHIP encoder publish into a room.
//!
//! - `POST /whip/{room}` with an SDP offer (`Content-Type: application/sdp`, at most
//!   [`MAX_SDP_BYTES`]) and `Authorization: Bearer <access token>` (the same token as the
//!   WebSocket's; its `name` is the participant's, a `viewer` token is refused) → `201 Created`,
//!   `Location: /whip/{room}/{resource}` and the SDP answer, which carries the server's ICE
//!   candidates (UDP and TCP; the server is ICE-lite and needs no trickle from the client,
//!   RFC 9725 section 4.3.1). The encoder joins the room as a publish-only participant
//!   (`SfuHandle::join_publisher`): the room's browsers see it and its tracks like anyone
//!   else's (the first audio m-line is its microphone, the first video its camera, a second
//!   video its screen); it is sent nothing.
//! - `DELETE /whip/{room}/{resource}` with a token of the same subject ends it (200).
//! - `PATCH` (trickle ICE, ICE restart) answers 405: not supported, which the RFC allows.
//! - `OPTIONS` answers CORS preflights (204) and says `Accept-Post: application/sdp`.
//!
//! Errors (RFC 9725 section 4, RFC 9110): 401 without a valid token, 403 for a token of another
//! room, a viewer token, a locked room or a removed user; 400 for an SDP that is no offer the
//! server can answer; 404 for an unknown resource; 405 for another method; 415 for another
//! content type; 429 over the join budget; 503 with `Retry-After` when the room or the server is
//! full; 307 to the node that hosts the room (several nodes). Each body is `{"code", "message"}`.
//!
//! A session ends with `DELETE`, or on its own when its transport fails (consent lost for 30 s,
//! RFC 7675) or never connects within `--connect-timeout-s`; its resource is then gone (404).

use super::AppState;
use actix_web::http::header;
use actix_web::http::StatusCode as S;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use confab_protocol::MAX_SDP_BYTES;
use confab_sfu::{ParticipantId, PublishTrack, RoomId, SfuError, SfuEvent, TrackSource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Seconds a client is told to wait (`Retry-After`) when the room or the server is full.
pub const RETRY_AFTER_S: u64 = 10;

/// The WHIP sessions this node holds: resource id → session. One short lock per request
/// (signaling rate), never on the media path.
#[derive(Default, Clone)]
pub struct WhipSessions {
    inner: Arc<Mutex<HashMap<String, WhipSession>>>,
}

/// One WHIP session: who publishes where.
#[derive(Debug, Clone)]
struct WhipSession {
    room: RoomId,
    participant: ParticipantId,
    /// The token subject that created it (only it may end it).
    user: String,
}

impl WhipSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WhipSession>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/whip/{room}")
            .route(web::post().to(create))
            .route(web::method(actix_web::http::Method::OPTIONS).to(preflight))
            .default_service(web::to(not_allowed)),
    )
    .service(
        web::resource("/whip/{room}/{resource}")
            .route(web::delete().to(delete))
            .route(web::method(actix_web::http::Method::OPTIONS).to(preflight))
            .default_service(web::to(not_allowed)),
    );
}

/// A WHIP error response: `status`, a stable `code` and a message.
fn error(status: S, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .json(serde_json::json!({"code": code, "message": message}))
}

/// 503 with `Retry-After`.
fn full(code: &str, message: &str) -> HttpResponse {
    let mut r = error(S::SERVICE_UNAVAILABLE, code, message);
    r.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(RETRY_AFTER_S),
    );
    r
}

/// 405 for the methods a WHIP endpoint or resource does not take (PATCH: no trickle ICE).
async fn not_allowed(req: HttpRequest) -> HttpResponse {
    let allow = if req.match_info().get("resource").is_some() {
        "DELETE, OPTIONS"
    } else {
        "POST, OPTIONS"
    };
    let mut r = error(
        S::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this WHIP URL takes {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    r
}

/// `OPTIONS`: CORS preflight (RFC 9725 section 4.1 lets browsers publish too).
async fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            "POST, DELETE, OPTIONS",
        ))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Authorization, Content-Type",
        ))
        .insert_header((header::ACCESS_CONTROL_EXPOSE_HEADERS, "Location"))
        .insert_header(("Accept-Post", "application/sdp"))
        .finish()
}

/// The publishing m-lines of an SDP offer as tracks: the first audio is the microphone, the
/// first video the camera, a second video the screen; others (and receive-only ones) are not
/// published. Empty: nothing to publish.
fn tracks_of(offer: &str) -> Vec<PublishTrack> {
    let mut out: Vec<PublishTrack> = Vec::new();
    for section in offer.split("\nm=").skip(1) {
        let kind = section.split_whitespace().next().unwrap_or_default();
        let attr = |name: &str| {
            section
                .lines()
                .find_map(|l| l.trim_end().strip_prefix(name).map(str::to_owned))
        };
        let sends = !section.lines().any(|l| {
            let l = l.trim_end();
            l == "a=recvonly" || l == "a=inactive"
        });
        let (Some(mid), true) = (attr("a=mid:"), sends) else {
            continue;
        };
        let has = |s: TrackSource| out.iter().any(|t| t.source == s);
        let source = match kind {
            "audio" if !has(TrackSource::Microphone) => TrackSource::Microphone,
            "video" if !has(TrackSource::Camera) => TrackSource::Camera,
            "video" if !has(TrackSource::Screen) => TrackSource::Screen,
            _ => continue,
        };
        out.push(PublishTrack { mid, source });
    }
    out
}

/// `POST /whip/{room}`: see the module docs.
async fn create(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    room: web::Path<String>,
) -> HttpResponse {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
    {
        return error(
            S::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a WHIP offer is application/sdp",
        );
    }
    let claims = match state
        .tokens
        .verify(&super::bearer(&req).unwrap_or_default())
    {
        Ok(c) => c,
        Err(e) => return error(S::UNAUTHORIZED, "unauthorized", &e.to_string()),
    };
    let Ok(room) = RoomId::parse(&room) else {
        return error(S::BAD_REQUEST, "invalid_room", "not a room id");
    };
    if claims.room.as_deref().is_some_and(|r| r != room.as_str()) {
        return error(S::FORBIDDEN, "forbidden", "this token is for another room");
    }
    if claims.role == crate::auth::Role::Viewer {
        return error(S::FORBIDDEN, "not_allowed", "a viewer token cannot publish");
    }
    if body.len() > MAX_SDP_BYTES {
        return error(
            S::PAYLOAD_TOO_LARGE,
            "sdp_too_large",
            &format!("an SDP has at most {MAX_SDP_BYTES} bytes"),
        );
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return error(S::BAD_REQUEST, "invalid_sdp", "the offer is not UTF-8 text");
    };
    let tracks = tracks_of(offer);
    if !offer.starts_with("v=0") || tracks.is_empty() {
        return error(
            S::BAD_REQUEST,
            "invalid_sdp",
            "the offer has no audio or video m-line to publish",
        );
    }
    let ip = crate::limits::client_ip(&req);
    if let Err(e) = state
        .socket_limits
        .allow_join(ip, &claims.sub, std::time::Instant::now())
    {
        let mut r = super::ApiError::from(e).error_response();
        r.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::HeaderValue::from_static("*"),
        );
        return r;
    }
    if state.sfu.participants() >= state.max_total_participants as u64 {
        return full(
            "server_full",
            "this server has as many participants as it takes; try again later",
        );
    }
    if let Some(cluster) = &state.cluster {
        if let crate::cluster::Placement::Elsewhere { url, .. } = cluster.claim(&room).await {
            return HttpResponse::TemporaryRedirect()
                .insert_header((header::LOCATION, format!("{url}/whip/{room}")))
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
                .finish();
        }
    }
    let name = crate::signaling::display_name(&claims.name)
        .unwrap_or("WHIP")
        .to_owned();
    let (tx, mut rx) = confab_sfu::mailbox();
    let joined = state
        .sfu
        .join_publisher(room.clone(), name, claims.sub.clone(), tx)
        .await;
    let participant = match joined {
        Ok(info) => info.participant,
        Err(SfuError::RoomFull { max }) => {
            return full(
                "room_full",
                &format!("the room is full ({max} participants)"),
            )
        }
        Err(SfuError::RoomLocked) => {
            return error(S::FORBIDDEN, "room_locked", "the room is locked")
        }
        Err(SfuError::Removed) => {
            return error(S::FORBIDDEN, "removed", "a host removed you from this room")
        }
        Err(e) => return full("unavailable", &e.to_string()),
    };
    let answer = match state
        .sfu
        .publish_offer(participant, offer.to_owned(), tracks)
        .await
    {
        Ok(a) => a,
        Err(e) => {
            state.sfu.leave(participant).await;
            return error(S::BAD_REQUEST, "invalid_sdp", &e.to_string());
        }
    };
    let resource = hex::encode(rand::random::<[u8; 16]>());
    state.whip.lock().insert(
        resource.clone(),
        WhipSession {
            room: room.clone(),
            participant,
            user: claims.sub.clone(),
        },
    );
    // The session's events: it subscribes to nothing, so only its end matters.
    let sessions = state.whip.clone();
    let key = resource.clone();
    actix_web::rt::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if let SfuEvent::Closed(reason) = ev {
                tracing::info!(participant = %participant, ?reason, "WHIP session ended");
                break;
            }
        }
        sessions.lock().remove(&key);
    });
    tracing::info!(room = %room, participant = %participant, "WHIP session started");
    HttpResponse::Created()
        .insert_header((header::CONTENT_TYPE, "application/sdp"))
        .insert_header((header::LOCATION, format!("/whip/{room}/{resource}")))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::ACCESS_CONTROL_EXPOSE_HEADERS, "Location"))
        .body(answer)
}

/// `DELETE /whip/{room}/{resource}`: ends the session (200), 404 when there is none.
async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let claims = match state
        .tokens
        .verify(&super::bearer(&req).unwrap_or_default())
    {
        Ok(c) => c,
        Err(e) => return error(S::UNAUTHORIZED, "unauthorized", &e.to_string()),
    };
    let (room, resource) = path.into_inner();
    let session = {
        let mut all = state.whip.lock();
        match all.get(&resource) {
            Some(s) if s.room.as_str() == room && s.user == claims.sub => all.remove(&resource),
            Some(s) if s.room.as_str() == room => {
                return error(
                    S::FORBIDDEN,
                    "forbidden",
                    "only who started a WHIP session may end it",
                )
            }
            _ => None,
        }
    };
    match session {
        Some(s) => {
            state.sfu.leave(s.participant).await;
            tracing::info!(room = %s.room, participant = %s.participant, "WHIP session deleted");
            HttpResponse::Ok()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
                .finish()
        }
        None => error(S::NOT_FOUND, "not_found", "no such WHIP session"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sending_m_lines_of_an_offer_become_microphone_camera_and_screen() {
        let offer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:4\r\na=sendonly\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:5\r\n";
        let tracks = tracks_of(offer);
        let got: Vec<(&str, TrackSource)> =
            tracks.iter().map(|t| (t.mid.as_str(), t.source)).collect();
        assert_eq!(
            got,
            vec![
                ("0", TrackSource::Microphone),
                ("1", TrackSource::Camera),
                ("3", TrackSource::Screen),
            ]
        );
        assert!(tracks_of("v=0\r\n").is_empty());
    }
}

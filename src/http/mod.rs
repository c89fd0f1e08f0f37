//! HTTP: the browser client, REST, the WebSocket upgrade and health. Handlers are thin: they
//! parse, call the layer below, and map errors to statuses here and nowhere else.

pub mod auth;
pub mod metrics;

use crate::auth::{AuthError, TokenAuthority, GUEST_TOKEN_TTL_S};
use crate::chat::ChatService;

mod calls;
pub mod health;
mod paid;
pub mod rooms;
pub mod whip;
use crate::signaling::protocol::MAX_FRAME_BYTES;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use confab_sfu::SfuHandle;
use serde::Deserialize;
use std::path::PathBuf;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The media plane.
    pub sfu: SfuHandle,
    /// Chat storage and relay.
    pub chat: ChatService,
    /// Paid sessions (None without chain settings).
    pub paid: Option<crate::paid::PaidHandle>,
    /// Presence and 1:1 calls.
    pub calls: crate::calls::CallService,
    /// The server-wide participant cap (`--max-total-participants`): joins past it get
    /// `server_full`.
    pub max_total_participants: usize,
    /// The room directory (listed rooms and their titles).
    pub directory: rooms::Directory,
    /// The LangDAO contract and its chain, for the page (None without chain settings).
    pub paid_chain: Option<crate::paid::ChainInfo>,
    /// Shared secret of other backends (None: their endpoints answer 401).
    pub api_secret: Option<secrecy::SecretString>,
    /// Token signing and checking.
    pub tokens: TokenAuthority,
    /// The browser client's directory.
    pub static_dir: PathBuf,
    /// ICE servers handed to clients in `joined` / `resumed` (`--ice-server`; usually none).
    pub ice: std::sync::Arc<crate::ice::IceServers>,
    /// The settlement outbox's backlog as the worker last measured it, for `/metrics` (None
    /// without chain settings).
    pub settlement_backlog: Option<confab_settlement::BacklogReader>,
    /// Webhooks: the signaling sessions' emitter and, for `/metrics`, `backlog()` (pending
    /// deliveries, oldest pending) and `dropped_events()`.
    pub webhooks: confab_webhooks::Webhooks,
    /// `POST /api/guest-token`'s own per-IP budget ([`GUEST_TOKEN_RATE_PER_S`],
    /// [`GUEST_TOKEN_BURST`]).
    pub guest_limiter: std::sync::Arc<crate::limits::IpLimiter>,
    /// The per-IP budget of `/healthz`, `/readyz` and `/metrics` ([`health::PROBE_BURST`]).
    pub probe_limiter: std::sync::Arc<crate::limits::IpLimiter>,
    /// The database, for `/readyz`.
    pub db: confab_store::Db,
    /// This node's membership of a cluster (`--redis-url`); `None` on a single node.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Open signaling sockets per address and subject, and the join budgets.
    pub socket_limits: std::sync::Arc<crate::limits::SocketLimits>,
    /// The WHIP ingest sessions of this node (`src/http/whip.rs`).
    pub whip: whip::WhipSessions,
}

/// Sustained guest tokens per second one IP address may ask for (one every 2 s).
pub const GUEST_TOKEN_RATE_PER_S: f64 = 0.5;

/// Guest tokens one IP address may ask for at once before [`GUEST_TOKEN_RATE_PER_S`] applies (a
/// full room behind one NAT joining together).
pub const GUEST_TOKEN_BURST: u32 = 20;

/// Errors of the HTTP layer, each with its status and stable code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: missing or invalid token.
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    /// 400: a request that does not parse or breaks a rule.
    #[error("{0}")]
    BadRequest(String),
    /// 403: a valid token for another room.
    #[error("{0}")]
    Forbidden(String),
    /// 503: the database is unavailable; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// 404: no such thing (e.g. no paid session in that room).
    #[error("{0}")]
    NotFound(String),
    /// 409: refused by the chain or a conflicting state; `code` says which.
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// Human text.
        message: String,
    },
    /// 429 `too_many_connections`: this address or token subject already holds its most open
    /// signaling sockets (`--max-sockets-per-ip`, `--max-sockets-per-user`).
    #[error("{0}")]
    TooManyConnections(String),
    /// 429 `rate_limited`: this client is over its budget; `Retry-After` says when to retry (s).
    #[error("{message}")]
    RateLimited {
        /// Seconds to wait before retrying.
        retry_after_s: u64,
        /// Human text.
        message: String,
    },
}

impl ApiError {
    /// 503 for a store error, with a generic message: the database's own text (tables,
    /// constraints, versions) never reaches a client; the error is logged instead.
    pub fn from_store(e: confab_store::StoreError) -> Self {
        if e.is_retryable() {
            tracing::warn!(error = %e, "database unavailable");
        } else {
            tracing::error!(error = %e, "database error");
        }
        ApiError::Unavailable("the database is unavailable right now; retry later".into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        use actix_web::http::StatusCode;
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } | ApiError::TooManyConnections(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
    fn error_response(&self) -> HttpResponse {
        let code = match self {
            ApiError::Unauthorized(AuthError::Expired) => "token_expired",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict { code, .. } => code,
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::TooManyConnections(_) => "too_many_connections",
        };
        let mut r = HttpResponse::build(self.status_code());
        if let ApiError::RateLimited { retry_after_s, .. } = self {
            r.insert_header(("retry-after", retry_after_s.to_string()));
        }
        r.json(serde_json::json!({"code": code, "message": self.to_string()}))
    }
}

impl From<crate::limits::LimitError> for ApiError {
    fn from(e: crate::limits::LimitError) -> Self {
        match e {
            crate::limits::LimitError::TooManyConnections(_) => {
                ApiError::TooManyConnections(e.to_string())
            }
            crate::limits::LimitError::RateLimited(_) => ApiError::RateLimited {
                retry_after_s: 10,
                message: e.to_string(),
            },
        }
    }
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig, static_dir: PathBuf) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/api/guests", web::post().to(guest_token))
        .route("/api/guest-token", web::post().to(guest_token))
        .route("/ws", web::get().to(websocket))
        .route("/rooms/{room}", web::get().to(room_page))
        .route("/api/rooms/{room}/messages", web::get().to(room_messages))
        .configure(paid::routes)
        .configure(auth::routes)
        .configure(calls::routes)
        .configure(rooms::routes)
        .configure(whip::routes)
        .service(actix_files::Files::new("/", static_dir).index_file("index.html"));
}

#[derive(Deserialize)]
struct GuestTokenRequest {
    name: String,
}

/// `POST /api/guests` (and its older name `POST /api/guest-token`) `{"name"}` →
/// `{"identity": "guest-<uuid>", "token", "expires_in": 7200}`: a new guest identity and a
/// `participant` token for it (s). Errors: 400 bad name, 429 `rate_limited` past the per-IP
/// budget ([`GUEST_TOKEN_BURST`], [`GUEST_TOKEN_RATE_PER_S`]).
async fn guest_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<GuestTokenRequest>,
) -> Result<HttpResponse, ApiError> {
    if !state.guest_limiter.allow_request(&req) {
        return Err(ApiError::RateLimited {
            retry_after_s: (1.0 / GUEST_TOKEN_RATE_PER_S).ceil() as u64,
            message: "too many guest tokens from this address; retry in a few seconds".into(),
        });
    }
    let name = crate::signaling::display_name(&body.name)
        .ok_or_else(|| ApiError::BadRequest("a name has 1 to 64 printable characters".into()))?;
    let sub = format!("guest-{}", uuid::Uuid::new_v4());
    let token = state.tokens.mint(&sub, name, GUEST_TOKEN_TTL_S, None);
    Ok(HttpResponse::Ok().json(
        serde_json::json!({"identity": sub, "token": token, "expires_in": GUEST_TOKEN_TTL_S}),
    ))
}

async fn room_page(state: web::Data<AppState>) -> actix_web::Result<actix_files::NamedFile> {
    Ok(actix_files::NamedFile::open_async(state.static_dir.join("room.html")).await?)
}

#[derive(Deserialize)]
struct WsQuery {
    #[serde(default)]
    token: String,
}

async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<WsQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    let claims = state.tokens.verify(&query.token).map_err(ApiError::from)?;
    let slot = state
        .socket_limits
        .open_socket(
            crate::limits::client_ip(&req),
            &claims.sub,
            std::time::Instant::now(),
        )
        .map_err(ApiError::from)?;
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    actix_web::rt::spawn(crate::signaling::session::run(
        session,
        stream,
        state.sfu.clone(),
        state.chat.clone(),
        state.paid.clone(),
        claims,
        state.ice.clone(),
        state.webhooks.emitter(),
        state.calls.clone(),
        state.max_total_participants,
        slot,
        state.cluster.clone(),
    ));
    Ok(response)
}

#[derive(Deserialize)]
struct MessagesQuery {
    before: Option<String>,
    limit: Option<u32>,
    #[serde(default)]
    token: Option<String>,
}

/// `GET /api/rooms/{room}/messages?before={id}&limit={n}`: a page of chat history, oldest first,
/// `{"messages": [...], "has_more": bool}`. Authorized like the room: a valid token (header
/// `Authorization: Bearer …` or `?token=`), bound to this room if it names one.
async fn room_messages(
    req: HttpRequest,
    state: web::Data<AppState>,
    room: web::Path<String>,
    query: web::Query<MessagesQuery>,
) -> Result<HttpResponse, ApiError> {
    let room = authorize_room(&req, &state, query.token.as_deref(), &room)?;
    let before = match query.before.as_deref().map(uuid::Uuid::parse_str) {
        Some(Ok(u)) => Some(u),
        Some(Err(_)) => return Err(ApiError::BadRequest("before is not a message id".into())),
        None => None,
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    let (messages, has_more) = state
        .chat
        .history_page(&room, before, limit)
        .await
        .map_err(ApiError::from_store)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"messages": messages, "has_more": has_more})))
}

/// Authorizes a request "like the room": a valid token from `Authorization: Bearer …` (or the
/// `?token=` fallback), bound to this room if it names one. Errors: 401, 403, 400 (bad room id).
pub(crate) fn authorize_room(
    req: &HttpRequest,
    state: &AppState,
    query_token: Option<&str>,
    room: &str,
) -> Result<confab_sfu::RoomId, ApiError> {
    let token = bearer(req)
        .or_else(|| query_token.map(str::to_owned))
        .unwrap_or_default();
    let claims = state.tokens.verify(&token)?;
    let room = confab_sfu::RoomId::parse(room).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if claims.room.as_deref().is_some_and(|r| r != room.as_str()) {
        return Err(ApiError::Forbidden("this token is for another room".into()));
    }
    Ok(room)
}

/// The `Authorization: Bearer …` value, if any.
pub(crate) fn bearer(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

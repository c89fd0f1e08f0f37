//! Wallet sign-in routes (Sign-In with Ethereum, EIP-4361), over [`crate::siwe`]:
//! `GET /api/auth/siwe/nonce` and `POST /api/auth/siwe`. Both share one per-IP rate limit.
//! Refusals map to HTTP here and nowhere else ([`SignInError`]), in the body shape every REST
//! error has: `{"code": "<stable code>", "message": "<human text>"}`.

use super::AppState;
use crate::limits::IpLimiter;
use crate::siwe::{short_address, Site, Siwe, SiweError, NONCE_TTL};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Lifetime of a token minted by a wallet sign-in, seconds (2 h, as a guest token).
pub const WALLET_TOKEN_TTL_S: u64 = crate::auth::GUEST_TOKEN_TTL_S;

/// Largest `POST /api/auth/siwe` body, bytes; past it: 413 `body_too_large`.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// Sustained requests per second one IP address may make to the two routes together.
pub const RATE_PER_S: f64 = 1.0;

/// Requests one IP address may make at once before [`RATE_PER_S`] applies (a sign-in is two).
pub const RATE_BURST: u32 = 30;

/// What the sign-in routes hold: the SIWE service and the per-IP limiter. Registered as its own
/// `web::Data` by [`crate::app::Application::build`].
#[derive(Debug)]
pub struct WalletAuth {
    siwe: Siwe,
    limiter: IpLimiter,
}

impl WalletAuth {
    /// With `public_origin` (`--public-origin`), the site every message must name; without it,
    /// the `Host` of each request (see [`Site`]).
    pub fn new(public_origin: Option<Site>) -> Self {
        Self {
            siwe: Siwe::new(public_origin),
            limiter: IpLimiter::new(RATE_PER_S, RATE_BURST),
        }
    }
}

/// Why a sign-in route refused, with its status and code (the one mapping of these to HTTP).
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The message, signature or nonce failed a check: 400 `malformed_message`, else 401 with the
    /// [`SiweError::code`] (`bad_signature`, `wrong_domain`, `wrong_uri`, `unknown_nonce`,
    /// `reused_nonce`, `expired`, `not_yet_valid`).
    #[error(transparent)]
    Siwe(#[from] SiweError),
    /// 400 `invalid_name`: the optional `name` is not 1–64 printable characters.
    #[error("a name has 1 to 64 printable characters")]
    InvalidName,
    /// 413 `body_too_large`: the body is over [`MAX_BODY_BYTES`].
    #[error("the body is over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// 429 `rate_limited`: this IP address is over [`RATE_PER_S`] / [`RATE_BURST`].
    #[error("too many sign-in requests; retry in a few seconds")]
    RateLimited,
}

impl SignInError {
    fn code(&self) -> &'static str {
        match self {
            SignInError::Siwe(e) => e.code(),
            SignInError::InvalidName => "invalid_name",
            SignInError::TooLarge => "body_too_large",
            SignInError::RateLimited => "rate_limited",
        }
    }
}

impl ResponseError for SignInError {
    fn status_code(&self) -> StatusCode {
        match self {
            SignInError::Siwe(SiweError::Malformed(_)) | SignInError::InvalidName => {
                StatusCode::BAD_REQUEST
            }
            SignInError::Siwe(_) => StatusCode::UNAUTHORIZED,
            SignInError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            SignInError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        if matches!(self, SignInError::RateLimited) {
            r.insert_header(("retry-after", "1"));
        }
        r.json(serde_json::json!({"code": self.code(), "message": self.to_string()}))
    }
}

/// Registers the two sign-in routes (called from [`super::routes`]).
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/auth/siwe/nonce", web::get().to(nonce))
        .route("/api/auth/siwe", web::post().to(sign_in));
}

fn rate_limit(req: &HttpRequest, auth: &WalletAuth) -> Result<(), SignInError> {
    if auth.limiter.allow_request(req) {
        Ok(())
    } else {
        Err(SignInError::RateLimited)
    }
}

/// `GET /api/auth/siwe/nonce` → `200 {"nonce": "<22 alphanumeric characters>", "expires_in": 300}`
/// (seconds the nonce stays usable). Not cached. Errors: 429 `rate_limited`.
async fn nonce(req: HttpRequest, auth: web::Data<WalletAuth>) -> Result<HttpResponse, SignInError> {
    rate_limit(&req, &auth)?;
    let nonce = auth.siwe.issue_nonce(Instant::now());
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(serde_json::json!({"nonce": nonce, "expires_in": NONCE_TTL.as_secs()})))
}

#[derive(Deserialize)]
struct SignInRequest {
    /// The EIP-4361 message, exactly as signed.
    message: String,
    /// `personal_sign` result: 65 bytes in hex.
    signature: String,
    /// Display name for the token; default: the short address.
    #[serde(default)]
    name: Option<String>,
}

/// `POST /api/auth/siwe` `{"message", "signature", "name"?}` →
/// `200 {"token": "<jwt>", "expires_in": 7200, "address": "0x<EIP-55>"}`; the token's `sub` is the
/// address, its name `name` or the short address (`0x1234…abcd`); it expires after
/// [`WALLET_TOKEN_TTL_S`] or at the message's `Expiration Time`, whichever is sooner (s, at
/// least 1). Errors: see [`SignInError`].
async fn sign_in(
    req: HttpRequest,
    payload: web::Payload,
    auth: web::Data<WalletAuth>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, SignInError> {
    rate_limit(&req, &auth)?;
    let body = match payload.to_bytes_limited(MAX_BODY_BYTES).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return Err(SiweError::Malformed("the body could not be read".into()).into()),
        Err(_) => return Err(SignInError::TooLarge),
    };
    let body: SignInRequest = serde_json::from_slice(&body).map_err(|e| {
        SiweError::Malformed(format!(
            "the body is not {{\"message\", \"signature\"}} JSON: {e}"
        ))
    })?;
    let name = match body.name.as_deref() {
        Some(n) => Some(crate::signaling::display_name(n).ok_or(SignInError::InvalidName)?),
        None => None,
    };
    let site = auth.siwe.expected_site(req.connection_info().host());
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let signed = auth
        .siwe
        .verify(
            &body.message,
            &body.signature,
            &site,
            now_ms,
            Instant::now(),
        )
        .inspect_err(|e| tracing::debug!(code = e.code(), "wallet sign-in refused"))?;
    let short = short_address(&signed.address);
    // The token lives WALLET_TOKEN_TTL_S, or less when the signed message expires sooner.
    let ttl_s = signed
        .expires_at_unix_ms
        .map(|exp| u64::try_from(exp.saturating_sub(now_ms) / 1000).unwrap_or(0))
        .map_or(WALLET_TOKEN_TTL_S, |left| left.clamp(1, WALLET_TOKEN_TTL_S));
    let token = state
        .tokens
        .mint(&signed.address, name.unwrap_or(&short), ttl_s, None);
    tracing::info!(address = %signed.address, chain_id = signed.chain_id, "wallet sign-in");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "token": token,
        "expires_in": ttl_s,
        "address": signed.address,
    })))
}

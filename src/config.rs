//! Typed settings: command-line flags, each also an environment variable, over an optional TOML
//! file (`--config`, see `confab.example.toml`), over defaults that run on a fresh machine.
//! Precedence: flag > environment > file > default ([`resolve`]). `validate()` runs at start-up
//! and reports every wrong value; secrets come only from the environment or files they name, are
//! `secrecy` types, at least 32 bytes ([`secrets`]) and are never printed.

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub mod file;
pub mod secrets;
pub mod show;

pub use file::{resolve, Origin, Resolved};
pub use secrets::{load_api_secret, load_token_secret};

/// confab: a WebRTC SFU with persisted chat and on-chain session settlement.
#[derive(Debug, Parser)]
#[command(name = "confab", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server settings when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Mint an access token with the server's secret (for scripts and other backends).
    Token(TokenArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `confab config …`.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum ConfigCommand {
    /// Load the configuration exactly as `serve` would (file, environment, flags), validate it
    /// and print the effective settings with every secret redacted. Exit status 0: valid.
    Check(ServeArgs),
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event (the default).
    #[default]
    Human,
    /// One JSON object per line (for a log collector).
    Json,
    /// `human` when the log goes to a terminal, else `json`.
    Auto,
}

/// `confab token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// User id (the JWT `sub`).
    #[arg(long, alias = "identity")]
    pub user: String,
    /// Display name.
    #[arg(long)]
    pub name: String,
    /// Lifetime: seconds, or with a unit (`90s`, `30m`, `2h`, `1d`).
    #[arg(long, default_value = "2h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// What the holder may do: `host`, `participant` or `viewer` (subscribe only).
    #[arg(long, default_value = "participant")]
    pub role: crate::auth::Role,
    /// Restrict the token to one room.
    #[arg(long)]
    pub room: Option<String>,
    /// Where the secret lives when CONFAB_JWT_SECRET is unset.
    #[arg(long, env = "CONFAB_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// A lifetime in seconds from `7200`, `90s`, `30m`, `2h` or `1d` (humantime's grammar).
fn parse_ttl(s: &str) -> Result<u64, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    humantime::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| format!("not a lifetime ({e}): e.g. 7200, 30m, 2h"))
}

/// `confab serve`. Every field but `config` and `webhooks` (whose own fields are) is also a key of
/// the configuration file, named as the field.
#[derive(Debug, Args, Clone, Serialize, Deserialize)]
pub struct ServeArgs {
    /// TOML configuration file under the flags and the environment (see `confab.example.toml`).
    /// Without it, flags, environment and defaults only.
    #[arg(long, env = "CONFAB_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Log lines: `human`, `json` (one object per line) or `auto` (human on a terminal, else json).
    #[arg(long, env = "CONFAB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// HTTP address (page, REST, WebSocket signaling). Port 0 picks a free port.
    #[arg(long, env = "CONFAB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// UDP port for all media (one port for every peer). 0 picks a free port.
    #[arg(long, env = "CONFAB_MEDIA_PORT", default_value_t = 7882)]
    pub media_port: u16,
    /// A participant whose signaling socket is gone stays in its room this long (seconds),
    /// media untouched, waiting to `resume` on a new socket; the others see it reconnecting.
    #[arg(long, env = "CONFAB_RESUME_GRACE_S", default_value_t = 20)]
    pub resume_grace_s: u64,
    /// TCP port of the passive ICE-TCP listener (RFC 6544) on every media interface, for
    /// networks that block UDP. Default: the media port's number.
    #[arg(long, env = "CONFAB_MEDIA_TCP_PORT")]
    pub media_tcp_port: Option<u16>,
    /// Address(es) announced in ICE candidates (e.g. a cloud VM's public IP behind 1:1 NAT).
    /// Default: the machine's interface addresses. Comma-separated or repeated.
    #[arg(long, env = "CONFAB_PUBLIC_IP", value_delimiter = ',')]
    pub public_ip: Vec<IpAddr>,
    /// Directory for the embedded database and the generated token secret.
    #[arg(long, env = "CONFAB_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Directory of the browser client.
    #[arg(long, env = "CONFAB_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// Most participants per room.
    #[arg(long, env = "CONFAB_MAX_PARTICIPANTS", default_value_t = 16)]
    pub max_participants: usize,
    /// Media workers: threads that each forward the rooms placed on them (by a stable hash of
    /// the room id), with their own sockets. Worker `i` uses the media ports + `i`, so open
    /// that range (e.g. UDP and TCP 7882–7885 for 4). Default: one per CPU core (at most 64).
    #[arg(long, env = "CONFAB_MEDIA_WORKERS")]
    pub media_workers: Option<usize>,
    /// Chat and records database: `postgres://…` for PostgreSQL, else a SQLite file path
    /// (default: `<data-dir>/confab.db`).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Most database connections.
    #[arg(long, env = "CONFAB_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
    /// How long a query waits for a connection before the database counts as unavailable, ms.
    #[arg(long, env = "CONFAB_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 3000)]
    pub db_acquire_timeout_ms: u64,
    /// JSON-RPC URL of the chain for paid sessions (`https://` or `http://`). Without it (and the contract and
    /// the wallet key), paid sessions are refused and everything else works.
    #[arg(long, env = "CHAIN_RPC_URL")]
    pub chain_rpc_url: Option<String>,
    /// Address of the LangDAO contract.
    #[arg(long, env = "CONFAB_CONTRACT_ADDRESS")]
    pub contract_address: Option<String>,
    /// Seconds a disconnected student or tutor has to come back before the paid session ends.
    #[arg(long, env = "CONFAB_PAID_GRACE_S", default_value_t = 30)]
    pub paid_grace_s: u64,
    /// Seconds without a heartbeat from a party after which the paid session ends.
    #[arg(long, env = "CONFAB_PAID_HEARTBEAT_TIMEOUT_S", default_value_t = 120)]
    pub paid_heartbeat_timeout_s: u64,
    /// First retry delay of a settlement that failed transiently (chain down, RPC timeout), ms.
    /// The delay doubles per attempt up to 5 min and retries never stop: an outage only delays
    /// settlement (see `--settlement-overdue-after-s`).
    #[arg(long, env = "CONFAB_SETTLEMENT_RETRY_MS", default_value_t = 2000)]
    pub settlement_retry_ms: u64,
    /// A settlement still open this long after its paid session ended is logged once as overdue
    /// and counted in the `confab_settlements_overdue` metric, seconds.
    #[arg(long, env = "CONFAB_SETTLEMENT_OVERDUE_AFTER_S", default_value_t = 600)]
    pub settlement_overdue_after_s: u64,
    /// How long a settlement row stays reserved to the worker that claimed it, seconds (servers
    /// sharing one PostgreSQL never work the same row). Best longer than one attempt (the 3 min
    /// receipt wait plus a few RPC timeouts): a shorter lease only costs a rebroadcast of the same
    /// signed transaction, never a second `endSession`. A crashed server's rows are taken over
    /// once their lease runs out.
    #[arg(long, env = "CONFAB_SETTLEMENT_LEASE_S", default_value_t = 300)]
    pub settlement_lease_s: u64,
    /// TLS on `--listen`: `off` (plain HTTP, the zero-setup default on localhost),
    /// `self-signed` (generated once under the data dir, so a LAN address is a secure origin),
    /// `files` (`--tls-cert`/`--tls-key`, default `certs/cert.pem`, `certs/key.pem`). With TLS on,
    /// `--listen` is the one port for everything: HTTPS, WSS and ICE-TCP media (the TCP candidate
    /// is announced on it; the media TCP port is not opened).
    #[arg(long, env = "CONFAB_TLS", value_enum, default_value_t = crate::tls::TlsMode::Off)]
    pub tls: crate::tls::TlsMode,
    /// PEM certificate chain for `--tls files` (giving it implies `--tls files`).
    #[arg(long, env = "CONFAB_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls files`.
    #[arg(long, env = "CONFAB_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// ICE servers handed to every client (optional; confab needs none): `stun:host:port`,
    /// `turn:host:port?transport=udp`, `turns:host:443?transport=tcp`. Comma-separated or
    /// repeated. TURN entries get time-limited credentials made with the TURN secret.
    #[arg(long = "ice-server", env = "CONFAB_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Vec<String>,
    /// File holding the TURN REST shared secret (coturn's `static-auth-secret`); the secret
    /// may instead come from the environment variable CONFAB_TURN_SECRET. At least 32 bytes.
    #[arg(long, env = "CONFAB_TURN_SECRET_FILE")]
    pub turn_secret_file: Option<PathBuf>,
    /// How long TURN credentials stay valid, seconds.
    #[arg(long, env = "CONFAB_TURN_TTL_S", default_value_t = 86_400)]
    pub turn_ttl_s: u64,
    /// The origin the page is served from as browsers see it (`https://host[:port]`), e.g. behind
    /// a reverse proxy. Wallet sign-in (EIP-4361) accepts only messages whose domain and URI name
    /// it. Without it each sign-in request's own `Host` is taken, which a relaying phishing site
    /// can choose: set it on the internet.
    #[arg(long, env = "CONFAB_PUBLIC_ORIGIN")]
    pub public_origin: Option<String>,
    /// Most participants this server holds in all its rooms together: a join past it is refused
    /// with `server_full` (a soft cap: joins racing at the limit may pass it by a few).
    #[arg(long, env = "CONFAB_MAX_TOTAL_PARTICIPANTS", default_value_t = 1000)]
    pub max_total_participants: usize,
    /// Signaling sockets one client address may hold open at once (past it the upgrade is
    /// refused: 429 `too_many_connections`); new sockets per address are also limited to this
    /// many at once and a tenth of it a second (429 `rate_limited`). 0: no limit (a load
    /// generator on one machine).
    #[arg(long, env = "CONFAB_MAX_SOCKETS_PER_IP", default_value_t = 64)]
    pub max_sockets_per_ip: u32,
    /// Signaling sockets one token subject may hold open at once (several tabs, the calls page
    /// and its call). 0: no limit.
    #[arg(long, env = "CONFAB_MAX_SOCKETS_PER_USER", default_value_t = 8)]
    pub max_sockets_per_user: u32,
    /// `join` and `resume` messages one client address may send per minute (also the burst: a
    /// study group behind one NAT joining together); past it `rate_limited`. 0: no limit.
    #[arg(long, env = "CONFAB_JOINS_PER_IP_PER_MIN", default_value_t = 120)]
    pub joins_per_ip_per_min: u32,
    /// `join` and `resume` messages one token subject may send per minute (also the burst);
    /// past it `rate_limited`. 0: no limit.
    #[arg(long, env = "CONFAB_JOINS_PER_USER_PER_MIN", default_value_t = 20)]
    pub joins_per_user_per_min: u32,
    /// Seconds a participant's publisher transport has, from its `join`, to connect (ICE and
    /// DTLS up); past it the participant is removed with `connect_timeout`, freeing its place.
    #[arg(long, env = "CONFAB_CONNECT_TIMEOUT_S", default_value_t = 20)]
    pub connect_timeout_s: u64,
    /// How long a 1:1 call rings before it ends unanswered (`missed`), seconds.
    #[arg(long, env = "CONFAB_CALL_RING_TIMEOUT_S", default_value_t = 30)]
    pub call_ring_timeout_s: u64,
    /// Redis shared by the nodes of one deployment (`redis://host:6379/0`; never logged): each
    /// node registers itself and the rooms it hosts, and a join for a room hosted elsewhere is
    /// answered `redirect` (`docs/protocol.md`). Unset: a single node, no Redis.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// This node's base URL as clients reach it (`https://n1.example.com`): where joins of the
    /// rooms it hosts are redirected. Required with `--redis-url`; each node needs its own
    /// `--node-id` too.
    #[arg(long, env = "CONFAB_NODE_URL")]
    pub node_url: Option<String>,
    /// Seconds a node's and its rooms' Redis keys live without renewal (renewed every third of
    /// it): how long the rooms of a node that died stay unavailable. 3 to 3600.
    #[arg(long, env = "CONFAB_CLUSTER_TTL_S", default_value_t = 10)]
    pub cluster_ttl_s: u64,
    /// Webhooks to other backends (`docs/protocol.md`, "Webhooks"). In the file their keys sit
    /// beside the others (`webhook_urls = [...]`), so this table is merged apart.
    #[command(flatten)]
    #[serde(skip)]
    pub webhooks: WebhookArgs,
}

/// Webhook settings. The signing secret (`whsec_<base64>`, 24 to 64 bytes) comes from the
/// environment: `CONFAB_WEBHOOK_SECRET`, else the file named by `CONFAB_WEBHOOK_SECRET_FILE`.
/// Servers sharing one database must be given the same endpoints (each start makes its own the
/// enabled ones).
#[derive(Debug, Args, Clone, Serialize, Deserialize)]
pub struct WebhookArgs {
    /// A Standard Webhooks endpoint (`https://…` or `http://…`) that gets every event, signed. Repeat the flag
    /// for several; the environment variable takes a comma-separated list.
    #[arg(
        long = "webhook-url",
        env = "CONFAB_WEBHOOK_URLS",
        value_delimiter = ','
    )]
    pub webhook_urls: Vec<String>,
    /// LangDAO-compatible mode: also post LangDAO's `session-ended`, `user-disconnected` and
    /// `session-heartbeat` bodies to this URL (their backend's `/api/webrtc-events`), through the
    /// same durable outbox.
    #[arg(long, env = "CONFAB_LANGDAO_EVENTS_URL")]
    pub langdao_events_url: Option<String>,
    /// Bound of one webhook request (connect, send, response head), ms.
    #[arg(long, env = "CONFAB_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    /// First retry delay of a failed delivery, ms; it doubles per failure up to
    /// `--webhook-retry-max-ms` (20 % jitter) and retries never stop.
    #[arg(long, env = "CONFAB_WEBHOOK_RETRY_MS", default_value_t = 2_000)]
    pub webhook_retry_ms: u64,
    /// Longest wait between two attempts of one delivery, ms.
    #[arg(long, env = "CONFAB_WEBHOOK_RETRY_MAX_MS", default_value_t = 600_000)]
    pub webhook_retry_max_ms: u64,
    /// LangDAO mode: a `session-heartbeat` per present party of a running paid session every
    /// this many seconds.
    #[arg(long, env = "CONFAB_LANGDAO_HEARTBEAT_S", default_value_t = 30)]
    pub langdao_heartbeat_s: u64,
    /// This server's name in the database's record of who is in which room: at start-up it
    /// reports `participant_left` and `room_finished` for the rooms its previous run left open
    /// (a crash). Keep it across restarts; servers sharing one database need distinct ones.
    #[arg(long, env = "CONFAB_NODE_ID", default_value = confab_webhooks::DEFAULT_NODE)]
    pub node_id: String,
}

impl Default for WebhookArgs {
    /// Webhooks off; the other values as the flags' defaults.
    fn default() -> Self {
        Self {
            webhook_urls: vec![],
            langdao_events_url: None,
            webhook_timeout_ms: 10_000,
            webhook_retry_ms: 2_000,
            webhook_retry_max_ms: 600_000,
            langdao_heartbeat_s: 30,
            node_id: confab_webhooks::DEFAULT_NODE.to_owned(),
        }
    }
}

impl WebhookArgs {
    /// The resolved settings, with the secret read from the environment when an endpoint is set.
    /// Errors: a malformed or short secret, an unreadable secret file.
    pub fn settings(&self) -> Result<confab_webhooks::Settings, confab_webhooks::ConfigError> {
        use std::time::Duration;
        let any = !self.webhook_urls.is_empty() || self.langdao_events_url.is_some();
        Ok(confab_webhooks::Settings {
            urls: self.webhook_urls.clone(),
            langdao_events_url: self.langdao_events_url.clone(),
            secret: if any {
                confab_webhooks::WebhookSecret::from_env()?
            } else {
                None
            },
            timeout: Some(Duration::from_millis(self.webhook_timeout_ms.max(1))),
            backoff: Some(confab_webhooks::Backoff {
                initial: Duration::from_millis(self.webhook_retry_ms.max(1)),
                max_delay: Duration::from_millis(
                    self.webhook_retry_max_ms.max(self.webhook_retry_ms.max(1)),
                ),
                ..confab_webhooks::Backoff::default()
            }),
            heartbeat_every: Some(Duration::from_secs(self.langdao_heartbeat_s.max(1))),
            node: Some(self.node_id.clone()),
        })
    }
}

/// Most media workers `--media-workers` accepts.
pub const MAX_MEDIA_WORKERS: usize = 256;

/// Most media workers the default (one per core) starts.
pub const DEFAULT_MEDIA_WORKERS_MAX: usize = 64;

/// Why the settings are unusable. Messages name the setting and never quote a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--max-participants` out of range.
    #[error("max_participants (--max-participants) must be between 2 and 100, got {0}")]
    MaxParticipants(usize),
    /// `--media-workers` out of range.
    #[error("media_workers (--media-workers) must be between 1 and {MAX_MEDIA_WORKERS}, got {0}")]
    MediaWorkers(usize),
    /// A media worker's port (the media port + its index) is past 65535.
    #[error("{0} (--{1}) {2} with {3} media workers needs ports up to {4}, past 65535")]
    MediaPortRange(&'static str, &'static str, u16, usize, usize),
    /// No static directory found.
    #[error("static_dir (--static-dir): browser client directory not found: {0}")]
    StaticDir(String),
    /// `--resume-grace-s` out of range.
    #[error("resume_grace_s (--resume-grace-s) must be between 1 and 240, got {0}")]
    ResumeGrace(u64),
    /// Creating the token secret's file failed.
    #[error("token secret: {0}")]
    Secret(String),
    /// `--public-origin` is not `http(s)://host[:port]`.
    #[error("public_origin (--public-origin): {0}")]
    PublicOrigin(String),
    /// `--settlement-lease-s` out of range.
    #[error("settlement_lease_s (--settlement-lease-s) must be between 5 and 86400, got {0}")]
    SettlementLease(u64),
    /// `--settlement-overdue-after-s` is zero.
    #[error("settlement_overdue_after_s (--settlement-overdue-after-s) must be at least 1")]
    SettlementOverdue,
    /// `--db-max-connections` is zero.
    #[error("db_max_connections (--db-max-connections) must be at least 1")]
    DbMaxConnections,
    /// The ICE servers or the TURN secret are unusable.
    #[error("ice_servers (--ice-server): {0}")]
    Ice(String),
    /// The webhook settings are unusable.
    #[error("webhooks: {0}")]
    Webhooks(String),
    /// `--redis-url`, `--node-url` or `--cluster-ttl-s` unusable, or Redis unreachable at start.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The configuration file cannot be read or is not TOML.
    #[error("configuration file {path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A key of the configuration file that is no setting.
    #[error("configuration file {path}: unknown key `{key}` (keys are the serve flags' names with underscores, see confab.example.toml)")]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The file.
        path: String,
    },
    /// A value of the configuration file of the wrong type or out of its type's range.
    #[error("{key}: {why} (in {path})")]
    Value {
        /// The key.
        key: String,
        /// What is wrong.
        why: String,
        /// The file.
        path: String,
    },
    /// The flags or environment could not be read as settings.
    #[error("{0}")]
    Flags(String),
    /// A secret's file cannot be read.
    #[error("{setting}: cannot read the secret file {path}: {why}")]
    SecretFile {
        /// The setting naming the file.
        setting: String,
        /// The file.
        path: String,
        /// The I/O error.
        why: String,
    },
    /// A secret is empty, short or malformed.
    #[error("{setting} {why}")]
    SecretValue {
        /// The setting it came from (variable, or variable and file).
        setting: String,
        /// What is wrong, never the value.
        why: String,
    },
    /// Several of the above, one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// One error, or [`ConfigError::Several`] (panics on none: callers have at least one).
    pub fn all(mut errors: Vec<ConfigError>) -> ConfigError {
        match errors.len() {
            1 => errors.remove(0),
            _ => ConfigError::Several(errors),
        }
    }

    /// The single errors (a [`ConfigError::Several`] opened).
    pub fn into_list(self) -> Vec<ConfigError> {
        match self {
            ConfigError::Several(list) => list.into_iter().flat_map(Self::into_list).collect(),
            one => vec![one],
        }
    }
}

impl ServeArgs {
    /// The signaling entry point's budgets.
    pub fn socket_limits(&self) -> crate::limits::SocketLimitSettings {
        crate::limits::SocketLimitSettings {
            sockets_per_ip: self.max_sockets_per_ip,
            sockets_per_user: self.max_sockets_per_user,
            joins_per_ip_per_min: self.joins_per_ip_per_min,
            joins_per_user_per_min: self.joins_per_user_per_min,
        }
    }

    /// Checks ranges, paths, the ICE and webhook settings and every secret (see [`secrets`]);
    /// the error holds one message per wrong value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let errors = self.problems();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::all(errors))
        }
    }

    /// Every wrong value, one error each (empty: valid).
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if !(2..=100).contains(&self.max_participants) {
            errors.push(ConfigError::MaxParticipants(self.max_participants));
        }
        let workers = self.media_workers();
        if !(1..=MAX_MEDIA_WORKERS).contains(&workers) {
            errors.push(ConfigError::MediaWorkers(workers));
        } else {
            let ports = [
                ("media_port", "media-port", Some(self.media_port)),
                ("media_tcp_port", "media-tcp-port", self.media_tcp_port),
            ];
            for (key, flag, port) in ports {
                let Some(port) = port.filter(|p| *p != 0) else {
                    continue;
                };
                let last = usize::from(port) + workers - 1;
                if last > usize::from(u16::MAX) {
                    errors.push(ConfigError::MediaPortRange(key, flag, port, workers, last));
                }
            }
        }
        if !(1..=240).contains(&self.resume_grace_s) {
            errors.push(ConfigError::ResumeGrace(self.resume_grace_s));
        }
        let dir = self.resolved_static_dir();
        if !dir.join("index.html").exists() {
            errors.push(ConfigError::StaticDir(dir.display().to_string()));
        }
        if !(5..=86_400).contains(&self.settlement_lease_s) {
            errors.push(ConfigError::SettlementLease(self.settlement_lease_s));
        }
        if self.settlement_overdue_after_s == 0 {
            errors.push(ConfigError::SettlementOverdue);
        }
        if self.db_max_connections == 0 {
            errors.push(ConfigError::DbMaxConnections);
        }
        if let Err(e) = self.cluster() {
            errors.push(e);
        }
        if let Err(e) = self.public_site() {
            errors.push(e);
        }
        let (_, secret_errors) = secrets::check(self);
        let secrets_ok = secret_errors.is_empty();
        errors.extend(secret_errors);
        if secrets_ok {
            // Reads the TURN and webhook secrets, judged above.
            if let Err(e) = self.ice_servers() {
                errors.push(ConfigError::Ice(e.to_string()));
            }
            if let Err(e) = self.webhooks.settings() {
                errors.push(ConfigError::Webhooks(e.to_string()));
            }
        }
        errors
    }

    /// The cluster settings (None without `--redis-url`). Errors: no `--node-url`, a node URL
    /// that is not `http(s)://host[:port]`, a TTL outside 3..=3600 s.
    pub fn cluster(&self) -> Result<Option<crate::cluster::ClusterSettings>, ConfigError> {
        let Some(redis_url) = self
            .redis_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let Some(node_url) = self
            .node_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Err(ConfigError::Cluster(
                "node_url (--node-url) is required with redis_url (--redis-url)".into(),
            ));
        };
        let node_url = node_url.trim_end_matches('/');
        let valid = url::Url::parse(node_url).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path() == "/"
                && u.query().is_none()
        });
        if !valid {
            return Err(ConfigError::Cluster(format!(
                "node_url (--node-url) must be http(s)://host[:port], got {node_url:?}"
            )));
        }
        if !(3..=3600).contains(&self.cluster_ttl_s) {
            return Err(ConfigError::Cluster(format!(
                "cluster_ttl_s (--cluster-ttl-s) must be between 3 and 3600, got {}",
                self.cluster_ttl_s
            )));
        }
        Ok(Some(crate::cluster::ClusterSettings {
            redis_url: redis_url.to_owned(),
            node_id: self.webhooks.node_id.clone(),
            node_url: node_url.to_owned(),
            ttl_s: self.cluster_ttl_s,
        }))
    }

    /// `--public-origin`, parsed (None when unset or empty). Errors: not `http(s)://host[:port]`.
    pub fn public_site(&self) -> Result<Option<crate::siwe::Site>, ConfigError> {
        match self.public_origin.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(o) => crate::siwe::Site::from_origin(o)
                .map(Some)
                .map_err(ConfigError::PublicOrigin),
        }
    }

    /// The ICE servers for clients (errors: a bad URL, a TURN URL without a usable secret, an
    /// unreadable secret file). The secret comes from `--turn-secret-file`, else
    /// `CONFAB_TURN_SECRET`.
    pub fn ice_servers(&self) -> anyhow::Result<crate::ice::IceServers> {
        let secret = match &self.turn_secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--turn-secret-file {}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var("CONFAB_TURN_SECRET")
                .ok()
                .map(|s| s.trim().to_owned()),
        }
        .filter(|s| !s.is_empty())
        .map(secrecy::SecretString::from);
        Ok(crate::ice::IceServers::new(
            &self.ice_servers,
            secret,
            self.turn_ttl_s,
        )?)
    }

    /// `--tls`, or `files` when only `--tls-cert` was given.
    pub fn tls_mode(&self) -> crate::tls::TlsMode {
        match (self.tls, &self.tls_cert) {
            (crate::tls::TlsMode::Off, Some(_)) => crate::tls::TlsMode::Files,
            (mode, _) => mode,
        }
    }

    /// `--database-url`, else the SQLite file `<data-dir>/confab.db`.
    pub fn resolved_database_url(&self) -> String {
        match &self.database_url {
            Some(u) if !u.is_empty() => u.clone(),
            _ => self.data_dir.join("confab.db").display().to_string(),
        }
    }

    /// `--media-workers`, else one per CPU core the process may use (at most
    /// [`DEFAULT_MEDIA_WORKERS_MAX`]).
    pub fn media_workers(&self) -> usize {
        self.media_workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(DEFAULT_MEDIA_WORKERS_MAX)
        })
    }

    /// `--static-dir`, else `./static`, else the source tree's `static/`.
    pub fn resolved_static_dir(&self) -> PathBuf {
        if let Some(d) = &self.static_dir {
            return d.clone();
        }
        let cwd = PathBuf::from("static");
        if cwd.join("index.html").exists() {
            return cwd;
        }
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/static"))
    }
}

/// The addresses to announce when `--public-ip` is not given: every IPv4 interface address
/// (loopback included, so a browser on the same machine connects).
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|list| {
            list.into_iter()
                .map(|i| i.ip())
                .filter(|ip| ip.is_ipv4())
                .collect()
        })
        .unwrap_or_default();
    ips.sort_by_key(|ip| ip.is_loopback());
    ips.dedup();
    if ips.is_empty() {
        ips.push(IpAddr::from([127, 0, 0, 1]));
    }
    ips
}

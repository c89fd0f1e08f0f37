//! Typed settings: command-line flags, each also an environment variable, with defaults that
//! run on a fresh machine. `validate()` runs at start-up; secrets are `secrecy` types.

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

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
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Mint an access token with the server's secret (for scripts and other backends).
    Token(TokenArgs),
}

/// `confab token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// User id (the JWT `sub`).
    #[arg(long)]
    pub user: String,
    /// Display name.
    #[arg(long)]
    pub name: String,
    /// Lifetime, seconds.
    #[arg(long, default_value_t = 7200)]
    pub ttl: u64,
    /// Restrict the token to one room.
    #[arg(long)]
    pub room: Option<String>,
    /// Where the secret lives when CONFAB_JWT_SECRET is unset.
    #[arg(long, env = "CONFAB_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// `confab serve`.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
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
    /// JSON-RPC URL of the chain for paid sessions (http://). Without it (and the contract and
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
    /// First retry delay of a failed settlement, ms (doubles per attempt, capped at 5 min,
    /// 20 attempts).
    #[arg(long, env = "CONFAB_SETTLEMENT_RETRY_MS", default_value_t = 2000)]
    pub settlement_retry_ms: u64,
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
    /// may instead come from the environment variable CONFAB_TURN_SECRET. At least 16 bytes.
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
}

/// Why the settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--max-participants` out of range.
    #[error("--max-participants must be between 2 and 100, got {0}")]
    MaxParticipants(usize),
    /// No static directory found.
    #[error("browser client directory not found: {0}")]
    StaticDir(String),
    /// `--resume-grace-s` out of range.
    #[error("--resume-grace-s must be between 1 and 240, got {0}")]
    ResumeGrace(u64),
    /// Reading or creating the secret failed.
    #[error("token secret: {0}")]
    Secret(String),
    /// `--public-origin` is not `http(s)://host[:port]`.
    #[error("--public-origin: {0}")]
    PublicOrigin(String),
}

impl ServeArgs {
    /// Checks ranges and paths.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(2..=100).contains(&self.max_participants) {
            return Err(ConfigError::MaxParticipants(self.max_participants));
        }
        if !(1..=240).contains(&self.resume_grace_s) {
            return Err(ConfigError::ResumeGrace(self.resume_grace_s));
        }
        let dir = self.resolved_static_dir();
        if !dir.join("index.html").exists() {
            return Err(ConfigError::StaticDir(dir.display().to_string()));
        }
        self.public_site()?;
        Ok(())
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

/// The shared secret other backends present (`Authorization: Bearer …`) on
/// `POST /api/sessions` and `POST /api/webrtc-events`: `CONFAB_API_SECRET`, else
/// `CONFAB_API_SECRET_FILE`. None: those endpoints answer 401.
pub fn load_api_secret() -> Option<SecretString> {
    if let Ok(s) = std::env::var("CONFAB_API_SECRET") {
        if !s.is_empty() {
            return Some(SecretString::from(s));
        }
    }
    let path = std::env::var("CONFAB_API_SECRET_FILE").ok()?;
    std::fs::read_to_string(path)
        .ok()
        .map(|s| SecretString::from(s.trim().to_owned()))
}

/// The token secret: `CONFAB_JWT_SECRET`, else `CONFAB_JWT_SECRET_FILE`, else
/// `<data-dir>/jwt-secret` (created with 32 random bytes, mode 0600, on first start).
pub fn load_token_secret(data_dir: &std::path::Path) -> Result<SecretString, ConfigError> {
    if let Ok(s) = std::env::var("CONFAB_JWT_SECRET") {
        if s.len() < 16 {
            return Err(ConfigError::Secret(
                "CONFAB_JWT_SECRET must have at least 16 characters".into(),
            ));
        }
        return Ok(SecretString::from(s));
    }
    let path = match std::env::var("CONFAB_JWT_SECRET_FILE") {
        Ok(p) => PathBuf::from(p),
        Err(_) => data_dir.join("jwt-secret"),
    };
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(SecretString::from(s.trim().to_owned()));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| ConfigError::Secret(e.to_string()))?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, &secret)
        .map_err(|e| ConfigError::Secret(format!("{}: {e}", path.display())))?;
    Ok(SecretString::from(secret))
}

fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(content.as_bytes())
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

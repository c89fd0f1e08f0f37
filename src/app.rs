//! Wiring: builds the media worker and the HTTP server from settings, on listeners bound
//! up front (port 0 works, for tests), and runs them until one stops.

use crate::auth::TokenAuthority;
use crate::chat::ChatService;
use crate::config::{interface_addresses, load_token_secret, ServeArgs};
use crate::http::{routes, AppState};
use crate::paid::PaidHandle;
use actix_web::{web, App, HttpServer};
use confab_settlement::{
    Address, BacklogReader, Backoff, ChainClient, ChainConfig, EndPolicy, SettlementWorker,
    WalletKey, WorkerConfig,
};
use confab_sfu::{
    spawn_media_worker, MediaConfig, MediaInterface, MediaWorker, RoomEvent, SfuHandle,
};
use confab_store::{Db, DbOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use tokio::sync::broadcast;

/// A built, not yet running, confab.
pub struct Application {
    http_addr: SocketAddr,
    server: actix_web::dev::Server,
    sfu: SfuHandle,
    room_events: broadcast::Sender<RoomEvent>,
    /// Stops the settlement worker (it flushes due settlements first).
    settlement_shutdown: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    /// The one-port front door's accept loop (TLS on), stopped with the server.
    front: Option<tokio::task::JoinHandle<()>>,
    /// The webhook delivery worker, stopped after the rooms closed (their last events written).
    webhook_worker: confab_webhooks::WorkerTask,
}

impl Application {
    /// Binds the HTTP listener and the media sockets and starts the media worker on its own
    /// thread. Errors: invalid settings, a port in use, an unreadable secret.
    pub async fn build(args: ServeArgs) -> anyhow::Result<Self> {
        args.validate()?;
        // `confab_tasks_alive` counts the tasks of this runtime, each HTTP worker's and the
        // media thread's.
        crate::http::metrics::register_runtime();
        let ice = args.ice_servers()?;
        let secret = load_token_secret(&args.data_dir)?;
        std::fs::create_dir_all(&args.data_dir)?;
        let db_opts = DbOptions {
            max_connections: args.db_max_connections,
            acquire_timeout_ms: args.db_acquire_timeout_ms,
            ..DbOptions::default()
        };
        let db = Db::connect(&args.resolved_database_url(), &db_opts)
            .await
            .map_err(|e| anyhow::anyhow!("database: {e}"))?;
        let interfaces: Vec<MediaInterface> = match args.public_ip.as_slice() {
            [] => interface_addresses()
                .into_iter()
                .map(|ip| MediaInterface {
                    bind: ip,
                    announce: ip,
                })
                .collect(),
            // An address of this machine: bind it, so replies leave from the announced address
            // (bound to 0.0.0.0, a reply to a peer on another interface would leave from that
            // interface's address, and the peer would see a peer-reflexive server).
            [one] if interface_addresses().contains(one) => vec![MediaInterface {
                bind: *one,
                announce: *one,
            }],
            // Behind a 1:1 NAT (a cloud VM's public IP): bind everything, announce the public IP.
            [one] => vec![MediaInterface {
                bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                announce: *one,
            }],
            many => many
                .iter()
                .map(|ip| MediaInterface {
                    bind: *ip,
                    announce: *ip,
                })
                .collect(),
        };
        // With TLS, `--listen` is the one port: its listener (the front door) sniffs each
        // connection, and ICE-TCP is announced on it instead of on a port of its own.
        let tls = crate::tls::server_config(
            args.tls_mode(),
            args.tls_cert.as_deref(),
            args.tls_key.as_deref(),
            &args.data_dir,
            &interfaces
                .iter()
                .map(|i| i.announce.to_string())
                .chain(std::iter::once(args.listen.ip().to_string()))
                .collect::<Vec<_>>(),
        )?;
        let front_listener = match &tls {
            Some(_) => Some(tokio::net::TcpListener::bind(args.listen).await?),
            None => None,
        };
        let front_port = match &front_listener {
            Some(l) => Some(l.local_addr()?.port()),
            None => None,
        };
        let media = MediaConfig {
            udp_port: args.media_port,
            tcp_port: args.media_tcp_port,
            tcp_shared_port: front_port,
            resume_grace: std::time::Duration::from_secs(args.resume_grace_s),
            connect_timeout: std::time::Duration::from_secs(args.connect_timeout_s.max(1)),
            interfaces,
            max_participants: args.max_participants,
            workers: args.media_workers(),
        };
        let (sfu, room_events) = start_media_threads(media)?;
        let cluster = match args.cluster()? {
            Some(settings) => {
                let c = crate::cluster::Cluster::connect(settings).await?;
                c.spawn_upkeep(sfu.clone(), room_events.subscribe());
                Some(c)
            }
            None => None,
        };

        // Behind the front door the HTTP server listens on loopback only.
        let listener = match &front_listener {
            Some(_) => TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?,
            None => TcpListener::bind(args.listen)?,
        };
        let http_addr = match &front_listener {
            Some(l) => l.local_addr()?,
            None => listener.local_addr()?,
        };
        let backend = listener.local_addr()?;
        let (webhooks, webhook_worker) = confab_webhooks::start(&db, args.webhooks.settings()?)
            .await
            .map_err(|e| anyhow::anyhow!("webhooks: {e}"))?;
        let PaidSessions {
            paid,
            chain: paid_chain,
            backlog,
            shutdown: settlement_shutdown,
        } = start_paid_sessions(&args, &db).await?;
        let state = AppState {
            paid,
            paid_chain,
            settlement_backlog: backlog,
            webhooks,
            guest_limiter: std::sync::Arc::new(crate::limits::IpLimiter::new(
                crate::http::GUEST_TOKEN_RATE_PER_S,
                crate::http::GUEST_TOKEN_BURST,
            )),
            probe_limiter: std::sync::Arc::new(crate::limits::IpLimiter::new(
                crate::http::health::PROBE_RATE_PER_S,
                crate::http::health::PROBE_BURST,
            )),
            db: db.clone(),
            cluster,
            api_secret: crate::config::load_api_secret(),
            directory: Default::default(),
            max_total_participants: args.max_total_participants.max(1),
            socket_limits: crate::limits::SocketLimits::new(args.socket_limits()),
            whip: Default::default(),
            calls: crate::calls::CallService::spawn(
                db.clone(),
                std::time::Duration::from_secs(args.call_ring_timeout_s.max(1)),
            ),
            chat: ChatService::new(db, sfu.clone()),
            sfu: sfu.clone(),
            tokens: TokenAuthority::new(secret),
            static_dir: args.resolved_static_dir(),
            ice: std::sync::Arc::new(ice),
        };
        let static_dir = state.static_dir.clone();
        let data = web::Data::new(state);
        let wallet = web::Data::new(crate::http::auth::WalletAuth::new(args.public_site()?));
        let client_addrs = web::Data::new(crate::limits::ClientAddrs::default());
        let front_addrs = client_addrs.clone().into_inner();
        let server = HttpServer::new(move || {
            // Runs on each HTTP worker, in its runtime.
            crate::http::metrics::register_runtime();
            App::new()
                .app_data(data.clone())
                .app_data(client_addrs.clone())
                .app_data(wallet.clone())
                .app_data(web::JsonConfig::default().limit(16 * 1024))
                .configure(|cfg| routes(cfg, static_dir.clone()))
        })
        .workers(2)
        // Signals are handled in `run_until_stopped`, which closes the rooms first.
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
        let front = match (front_listener, tls) {
            (Some(l), Some(tls)) => {
                tracing::info!(addr = %http_addr, "one port: HTTPS, WSS and ICE-TCP");
                let front = std::sync::Arc::new(crate::front::Front {
                    tls: tokio_rustls::TlsAcceptor::from(tls),
                    backend,
                    sfu: sfu.clone(),
                    client_addrs: front_addrs,
                });
                Some(tokio::spawn(crate::front::run(l, front)))
            }
            _ => None,
        };
        Ok(Self {
            http_addr,
            server,
            sfu,
            room_events,
            settlement_shutdown,
            front,
            webhook_worker,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The media plane.
    pub fn sfu(&self) -> &SfuHandle {
        &self.sfu
    }

    /// Room lifecycle events.
    pub fn room_events(&self) -> broadcast::Receiver<RoomEvent> {
        self.room_events.subscribe()
    }

    /// Serves until SIGINT/SIGTERM (or the HTTP server stops). Shutdown is ordered: close every
    /// room (each signaling socket is closed with 1001 "going away", so clients reconnect at
    /// once), stop HTTP (in-flight requests get 5 s), then let the settlement worker flush due
    /// settlements. Running paid sessions stay open in the database and are resumed (with the
    /// grace period) by the next start.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let sfu = self.sfu.clone();
        let mut server = self.server;
        let r = tokio::select! {
            r = &mut server => r,
            _ = shutdown_signal() => {
                tracing::info!("shutting down: closing rooms");
                sfu.shutdown().await;
                // Let the signaling sessions write their close frames.
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                // The server future processes the stop command: drive both together.
                let ((), r) = tokio::join!(handle.stop(true), server);
                r
            }
        };
        if let Some(front) = self.front {
            front.abort();
        }
        self.sfu.shutdown().await;
        if let Some((stop, task)) = self.settlement_shutdown {
            let _ = stop.send(());
            let _ = task.await;
        }
        self.webhook_worker.shutdown().await;
        r
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs each media worker ([`MediaConfig::workers`]) on a dedicated thread with its own
/// single-threaded runtime, so media never competes with HTTP handlers for an executor and each
/// worker has a core to itself. Errors: a thread or runtime that cannot start, a port in use.
fn start_media_threads(
    config: MediaConfig,
) -> std::io::Result<(SfuHandle, broadcast::Sender<RoomEvent>)> {
    let (room_events, _) = broadcast::channel(confab_sfu::ROOM_EVENTS);
    let mut workers = Vec::new();
    for index in 0..config.workers.max(1) {
        workers.push(start_media_thread(
            config.clone(),
            index,
            room_events.clone(),
        )?);
    }
    Ok((SfuHandle::new(workers)?, room_events))
}

/// Starts media worker `index` on a thread of its own (`confab-media-<index>`).
fn start_media_thread(
    config: MediaConfig,
    index: usize,
    room_events: broadcast::Sender<RoomEvent>,
) -> std::io::Result<MediaWorker> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("confab-media-{index}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                crate::http::metrics::register_runtime();
                match spawn_media_worker(config, index, room_events) {
                    Ok((worker, task)) => {
                        let _ = tx.send(Ok(worker));
                        if let Err(e) = task.await {
                            // Not a server without media pretending to be healthy: exit non-zero
                            // so the supervisor (systemd, Docker, Kubernetes) restarts it. A panic
                            // in one participant's handling never gets here (the core removes
                            // that participant); this is the worker loop itself dying.
                            tracing::error!(worker = index, "media worker died: {e}; exiting");
                            std::process::exit(70);
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })?;
    rx.recv()
        .map_err(|_| std::io::Error::other("media thread died"))?
}

/// What [`start_paid_sessions`] started; every part `None` without chain settings.
#[derive(Default)]
struct PaidSessions {
    /// The paid-session task.
    paid: Option<PaidHandle>,
    /// The contract and its chain id (learnt from the node in the background).
    chain: Option<crate::paid::ChainInfo>,
    /// The settlement worker's backlog, for `/metrics`.
    backlog: Option<BacklogReader>,
    /// Stops the settlement worker, and the worker's task.
    shutdown: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

/// With chain settings: the settlement worker (the wallet's only sender) and the paid-session
/// task. Without: nothing (paid sessions are refused with `paid_sessions_disabled`).
async fn start_paid_sessions(args: &ServeArgs, db: &Db) -> anyhow::Result<PaidSessions> {
    let (Some(rpc), Some(contract)) = (
        args.chain_rpc_url.as_deref(),
        args.contract_address.as_deref(),
    ) else {
        tracing::info!(
            "paid sessions disabled: CHAIN_RPC_URL and CONFAB_CONTRACT_ADDRESS are not both set"
        );
        return Ok(PaidSessions::default());
    };
    let contract: Address = contract
        .parse()
        .map_err(|_| anyhow::anyhow!("CONFAB_CONTRACT_ADDRESS is not an address"))?;
    let key = WalletKey::from_env().map_err(|e| anyhow::anyhow!("backend wallet key: {e}"))?;
    let config = ChainConfig::new(rpc.to_owned(), contract);
    let sender =
        ChainClient::new(config.clone(), &key).map_err(|e| anyhow::anyhow!("chain client: {e}"))?;
    let reader =
        ChainClient::new(config.clone(), &key).map_err(|e| anyhow::anyhow!("chain client: {e}"))?;
    let probe = ChainClient::new(config, &key).map_err(|e| anyhow::anyhow!("chain client: {e}"))?;
    let chain = crate::paid::ChainInfo::learn(probe);
    tracing::info!(wallet = %sender.wallet_address(), %contract, "paid sessions enabled");
    let backoff = Backoff {
        initial: std::time::Duration::from_millis(args.settlement_retry_ms.max(10)),
        ..Backoff::default()
    };
    let config = WorkerConfig {
        lease: std::time::Duration::from_secs(args.settlement_lease_s),
        overdue_after: std::time::Duration::from_secs(args.settlement_overdue_after_s),
        ..WorkerConfig::default()
    };
    let worker = SettlementWorker::new(db.clone(), sender, backoff, config);
    let waker = worker.waker();
    let backlog = worker.backlog();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));
    let policy = EndPolicy {
        disconnect_grace: std::time::Duration::from_secs(args.paid_grace_s),
        heartbeat_timeout: std::time::Duration::from_secs(args.paid_heartbeat_timeout_s),
    };
    let paid = crate::paid::spawn(db.clone(), reader, policy, waker)
        .await
        .map_err(|e| anyhow::anyhow!("paid sessions: {e}"))?;
    Ok(PaidSessions {
        paid: Some(paid),
        chain: Some(chain),
        backlog: Some(backlog),
        shutdown: Some((stop_tx, task)),
    })
}

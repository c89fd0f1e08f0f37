//! The media worker: the I/O shell around the [`Core`]. One tokio task owns the UDP sockets
//! (one per announced interface, every peer on the same port), the passive ICE-TCP listeners
//! (RFC 6544, one per interface) and the core; it reads datagrams, TCP frames, commands and the
//! clock, feeds them to the core, and writes what the core produces. Each TCP connection has a
//! reader task (RFC 4571 framing) and a writer task behind a bounded queue, so a slow TCP peer
//! only ever loses its own packets. Nothing is shared: signaling reaches the worker through
//! [`Command`]s and gets oneshot replies; counters are relaxed atomics.

use crate::api::{Command, MediaConfig, MediaWorker, RoomEvent, SfuMetrics, COMMAND_QUEUE};
use crate::core::{Core, Transmit};
use crate::room::LocalCandidates;
use crate::routing::udp_tuple;
use bytes::{Buf, Bytes, BytesMut};
use rtc::shared::{FiveTuple, TransportProtocol};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info};

/// Capacity of the room-lifecycle broadcast; a subscriber that lags more than this many events
/// behind loses the oldest ones (and is told so by `broadcast::error::RecvError::Lagged`).
pub const ROOM_EVENTS: usize = 1024;

/// Largest datagram read (bytes); RTP over UDP stays under the path MTU (~1200–1500).
const MAX_DATAGRAM: usize = 2048;

/// Datagrams read from one socket before the loop looks at commands and timers again.
const RECV_BATCH: usize = 64;

/// The longest the loop sleeps without a deadline from the core (route expiry still runs).
const IDLE_TICK: Duration = Duration::from_secs(1);

/// A signaling command that holds the loop longer than this is logged (debug): every
/// transport's datagrams wait meanwhile.
const SLOW_COMMAND: Duration = Duration::from_millis(5);

/// Most ICE-TCP connections held at once; a connection past it is closed at once (counted).
pub const MAX_TCP_CONNECTIONS: usize = 4096;

/// Video frames queued towards one ICE-TCP connection. When it is full the newest frame is dropped and
/// counted (`drops_tcp_queue_full`): the slow peer loses its own packets (NACK and keyframes
/// repair them), the loop never waits.
pub const TCP_WRITE_QUEUE: usize = 512;

/// Frames other than video queued towards one ICE-TCP connection (~5 s of Opus with its RTCP);
/// when full the newest is dropped and counted like a full video queue.
pub const TCP_URGENT_QUEUE: usize = 256;

/// Frames queued towards one ICE-TCP connection past which it counts as backed up: video to it
/// stops (to the next keyframe) so audio is never queued behind it (RFC 6544 leaves the policy
/// to the implementation; a quarter of the queue is ~0.5 s of 2.5 Mbps video).
pub const TCP_CONGESTED_ABOVE: usize = TCP_WRITE_QUEUE / 4;

/// Frames queued below which a backed-up connection counts as drained again.
pub const TCP_DRAINED_BELOW: usize = TCP_WRITE_QUEUE / 16;

/// How long the frame at the head of an ICE-TCP connection's queue may have waited before the
/// connection counts as backed up, whatever the queue's length: on a slow link (120 kbit/s) a
/// [`TCP_CONGESTED_ABOVE`]-frame backlog is ~10 s of waiting, on a fast one a keyframe burst of
/// 40 KB drains in tens of ms. A wait is what audio feels, so it decides.
pub const TCP_CONGESTED_AFTER: Duration = Duration::from_millis(300);

/// A backed-up connection counts as drained only when its head frame has waited less than this
/// (and fewer than [`TCP_DRAINED_BELOW`] frames are queued).
pub const TCP_DRAINED_AFTER: Duration = Duration::from_millis(100);

/// Unsent bytes the kernel may hold for one ICE-TCP connection (`TCP_NOTSENT_LOWAT`, Linux):
/// past it a write waits, so the backlog of a slow link builds in [`TCP_WRITE_QUEUE`], where the
/// watermarks see it and the drop policy chooses what goes, instead of in a send buffer the
/// kernel autotunes up to 4 MiB (many seconds of media on a slow link, with audio stuck behind
/// stale video). Bytes in flight are not limited: fast long paths keep their throughput.
/// 16 KiB is ~50 ms of 2.5 Mbps video.
pub const TCP_NOTSENT_LOWAT: u32 = 16 * 1024;

/// Frames from every ICE-TCP connection queued towards the loop; a reader waits when it is full
/// (TCP flow control pushes back on that peer only).
const TCP_READ_QUEUE: usize = 4096;

/// An ICE-TCP connection that sends nothing for this long is closed (consent checks come every
/// few seconds; RFC 7675 allows 30 s).
const TCP_IDLE: Duration = Duration::from_secs(30);

/// What the TCP reader tasks tell the loop.
enum TcpEvent {
    /// One RFC 4571 frame (a STUN, DTLS, RTP or RTCP packet).
    Frame { tuple: FiveTuple, data: BytesMut },
    /// The connection ended (EOF, error, idle, or a frame over [`MAX_DATAGRAM`]).
    Closed { tuple: FiveTuple },
}

struct MediaSocket {
    socket: UdpSocket,
    /// The address rtc sees as the local side: the announced IP and the bound port (must equal
    /// a local candidate's address).
    tag: SocketAddr,
}

/// Starts media worker `index` (of [`MediaConfig::workers`]) on the current tokio runtime:
/// binds its UDP socket on every configured interface at its port
/// ([`MediaConfig::worker_port`]) and its ICE-TCP listeners, and reports room lifecycle events
/// on `room_events` (one broadcast shared by every worker). Returns what a [`crate::SfuHandle`] needs
/// to reach it ([`crate::SfuHandle::new`]) and its task. Errors: a bind error, no interface.
pub fn spawn_media_worker(
    config: MediaConfig,
    index: usize,
    room_events: broadcast::Sender<RoomEvent>,
) -> std::io::Result<(MediaWorker, tokio::task::JoinHandle<()>)> {
    let udp_port = MediaConfig::worker_port(config.udp_port, index)?;
    let mut sockets = Vec::new();
    for iface in &config.interfaces {
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(iface.bind, udp_port))?;
        std_socket.set_nonblocking(true)?;
        let port = std_socket.local_addr()?.port();
        let socket = UdpSocket::from_std(std_socket)?;
        sockets.push(MediaSocket {
            socket,
            tag: SocketAddr::new(iface.announce, port),
        });
    }
    if sockets.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no media interface configured",
        ));
    }
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let metrics = Arc::new(SfuMetrics::default());
    let mut listeners = Vec::new();
    let mut shared_tcp = Vec::new();
    for (iface, udp) in config.interfaces.iter().zip(&sockets) {
        if let Some(port) = config.tcp_shared_port {
            shared_tcp.push(SocketAddr::new(iface.announce, port));
            continue;
        }
        let std_listener = match config.tcp_port {
            Some(port) => std::net::TcpListener::bind(SocketAddr::new(
                iface.bind,
                MediaConfig::worker_port(port, index)?,
            ))?,
            // The UDP port's number, or (taken by another TCP socket) any free one.
            None => std::net::TcpListener::bind(SocketAddr::new(iface.bind, udp.tag.port()))
                .or_else(|_| std::net::TcpListener::bind(SocketAddr::new(iface.bind, 0)))?,
        };
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        listeners.push((
            TcpListener::from_std(std_listener)?,
            SocketAddr::new(iface.announce, port),
        ));
    }
    let udp_addrs = Arc::new(sockets.iter().map(|s| s.tag).collect::<Vec<_>>());
    let tcp_addrs = Arc::new(
        listeners
            .iter()
            .map(|(_, tag)| *tag)
            .chain(shared_tcp)
            .collect::<Vec<_>>(),
    );
    let local = LocalCandidates {
        udp: udp_addrs.to_vec(),
        tcp: tcp_addrs.to_vec(),
    };
    info!(worker = index, udp = ?local.udp, tcp = ?local.tcp, "media worker listening");
    let (tcp_tx, tcp_rx) = mpsc::channel(TCP_READ_QUEUE);
    let core = Core::new(
        local,
        config.max_participants,
        metrics.clone(),
        room_events.clone(),
        Instant::now(),
    )
    .with_resume_grace(config.resume_grace)
    .with_connect_timeout(config.connect_timeout)
    .with_participant_ids(index as u64 + 1, config.workers.max(1) as u64);
    let worker = Worker {
        sockets,
        listeners,
        tcp_addrs: tcp_addrs.to_vec(),
        tcp_tx,
        tcp_conns: HashMap::new(),
        epoch: Instant::now(),
        tcp_congested: Vec::new(),
        core,
        metrics: metrics.clone(),
        rx_buf: BytesMut::with_capacity(64 * 1024),
    };
    let task = tokio::spawn(worker.run(rx, tcp_rx));
    Ok((
        MediaWorker {
            tx,
            metrics,
            udp_addrs: udp_addrs.to_vec(),
            tcp_addrs: tcp_addrs.to_vec(),
        },
        task,
    ))
}

/// One ICE-TCP connection as the loop sees it: two write queues, drained by its writer task
/// urgent first.
struct TcpConn {
    /// Everything but video RTP (audio, RTCP, STUN, DTLS, DataChannel data), each frame with
    /// the µs (since [`Worker::epoch`]) it was queued at: written before any queued video, so
    /// audio never waits behind a keyframe burst on a slow link.
    urgent: mpsc::Sender<(u64, Bytes)>,
    /// Video RTP frames, likewise. Its length counts towards the backlog.
    video: mpsc::Sender<(u64, Bytes)>,
    /// When the frame its writer is writing now (of either queue) was queued (µs since
    /// [`Worker::epoch`], at least 1), or 0 when both queues are empty: how long the head of
    /// the connection has waited. A writer stuck on an audio frame behind a full kernel buffer
    /// is as backed up as one stuck on video.
    head: Arc<AtomicU64>,
}

impl TcpConn {
    /// Video frames queued, and how long the frame being written has waited as of `now_us`.
    fn backlog(&self, now_us: u64) -> (usize, Duration) {
        let head = self.head.load(Ordering::Relaxed);
        let waited = if head == 0 {
            0
        } else {
            now_us.saturating_sub(head)
        };
        (
            TCP_WRITE_QUEUE - self.video.capacity(),
            Duration::from_micros(waited),
        )
    }
}

struct Worker {
    sockets: Vec<MediaSocket>,
    /// Passive ICE-TCP listeners and their announced addresses.
    listeners: Vec<(TcpListener, SocketAddr)>,
    /// Every announced TCP candidate address (own listeners' and the shared port's).
    tcp_addrs: Vec<SocketAddr>,
    /// Handed to each connection's reader task.
    tcp_tx: mpsc::Sender<TcpEvent>,
    /// Each open ICE-TCP connection's write queue, by its 5-tuple.
    tcp_conns: HashMap<FiveTuple, TcpConn>,
    /// The zero of the µs timestamps [`TcpConn::head`] holds.
    epoch: Instant,
    /// Connections backed up ([`TCP_CONGESTED_ABOVE`] frames queued, or the head frame waiting
    /// past [`TCP_CONGESTED_AFTER`]) and not drained yet.
    tcp_congested: Vec<FiveTuple>,
    core: Core,
    metrics: Arc<SfuMetrics>,
    /// Receive buffer; each datagram is split off it, so allocation happens once per ~64 KiB
    /// rather than once per packet.
    rx_buf: BytesMut,
}

impl Worker {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut tcp_rx: mpsc::Receiver<TcpEvent>,
    ) {
        let sleep = tokio::time::sleep(IDLE_TICK);
        tokio::pin!(sleep);
        self.metrics.worker_beat();
        loop {
            let deadline = self
                .core
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + IDLE_TICK);
            sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
            if self.rx_buf.capacity() < MAX_DATAGRAM {
                self.rx_buf.reserve(64 * 1024);
            }
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => {
                        self.core.shutdown(Instant::now());
                        self.send_all();
                        return;
                    }
                    Some(Command::AdoptTcp { stream, local_ip, remote }) => {
                        self.adopt_tcp(stream, local_ip, remote);
                    }
                    Some(cmd) => {
                        let started = Instant::now();
                        let what = cmd.name();
                        apply(&mut self.core, cmd, started);
                        self.send_all();
                        let took = started.elapsed();
                        if took > SLOW_COMMAND {
                            debug!(command = what, ms = took.as_secs_f64() * 1e3, "slow command: every transport waited");
                        }
                    }
                },
                (i, n, peer) = std::future::poll_fn(|cx| poll_recv_any(&self.sockets, &mut self.rx_buf, cx)) => {
                    self.on_datagram(i, peer, n, Instant::now());
                    // Drain what else is queued on that socket without going back through select.
                    for _ in 0..RECV_BATCH {
                        if self.rx_buf.capacity() < MAX_DATAGRAM {
                            self.rx_buf.reserve(64 * 1024);
                        }
                        match try_recv(&self.sockets[i].socket, &mut self.rx_buf) {
                            Some((n, peer)) => self.on_datagram(i, peer, n, Instant::now()),
                            None => break,
                        }
                    }
                }
                (i, stream, remote) = std::future::poll_fn(|cx| poll_accept_any(&self.listeners, cx)) => {
                    self.on_tcp_accept(i, stream, remote);
                }
                Some(ev) = tcp_rx.recv() => match ev {
                    TcpEvent::Frame { tuple, data } => {
                        let now = Instant::now();
                        self.core.handle_datagram(tuple, data, now);
                        self.send_all();
                        self.metrics.record_processing(now.elapsed().as_nanos() as u64);
                    }
                    TcpEvent::Closed { tuple } => {
                        self.tcp_conns.remove(&tuple);
                        self.tcp_congested.retain(|t| *t != tuple);
                    }
                },
                _ = &mut sleep => {
                    self.metrics.worker_beat();
                    self.core.handle_timeout(Instant::now());
                    self.check_drained(Instant::now());
                    self.send_all();
                }
            }
        }
    }

    fn on_datagram(&mut self, sock: usize, peer: SocketAddr, n: usize, now: Instant) {
        let data = self.rx_buf.split_to(n);
        let tuple = udp_tuple(self.sockets[sock].tag, peer);
        self.core.handle_datagram(tuple, data, now);
        self.send_all();
        self.metrics
            .record_processing(now.elapsed().as_nanos() as u64);
    }

    /// An ICE-TCP connection from the one-port front door, tagged with the TCP candidate
    /// announced for the address it arrived on (behind a 1:1 NAT, the only one).
    fn adopt_tcp(&mut self, stream: std::net::TcpStream, local_ip: IpAddr, remote: SocketAddr) {
        let Some(&local) = self
            .tcp_addrs
            .iter()
            .find(|a| a.ip() == local_ip)
            .or(self.tcp_addrs.first())
        else {
            return;
        };
        let stream = match stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream))
        {
            Ok(s) => s,
            Err(e) => {
                debug!("adopting an ICE-TCP connection: {e}");
                return;
            }
        };
        self.on_tcp_connection(local, stream, remote);
    }

    /// A new ICE-TCP connection on listener `i`.
    fn on_tcp_accept(&mut self, i: usize, stream: TcpStream, remote: SocketAddr) {
        self.on_tcp_connection(self.listeners[i].1, stream, remote);
    }

    /// A new ICE-TCP connection, `local` its announced candidate address: a reader and a
    /// writer task, unless the limit is reached.
    fn on_tcp_connection(&mut self, local: SocketAddr, stream: TcpStream, remote: SocketAddr) {
        if self.tcp_conns.len() >= MAX_TCP_CONNECTIONS {
            SfuMetrics::inc(&self.metrics.tcp_refused);
            return; // dropping the stream closes it
        }
        SfuMetrics::inc(&self.metrics.tcp_connections);
        let _ = stream.set_nodelay(true);
        #[cfg(target_os = "linux")]
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(TCP_NOTSENT_LOWAT) {
            debug!("ICE-TCP {remote}: TCP_NOTSENT_LOWAT: {e}");
        }
        let tuple = FiveTuple {
            local_addr: local,
            peer_addr: remote,
            transport_protocol: TransportProtocol::TCP,
        };
        let (rd, wr) = stream.into_split();
        let (urgent, urgent_rx) = mpsc::channel(TCP_URGENT_QUEUE);
        let (video, video_rx) = mpsc::channel(TCP_WRITE_QUEUE);
        let head = Arc::new(AtomicU64::new(0));
        self.tcp_conns.insert(
            tuple,
            TcpConn {
                urgent,
                video,
                head: head.clone(),
            },
        );
        tokio::spawn(read_frames(rd, tuple, self.tcp_tx.clone()));
        tokio::spawn(write_frames(wr, urgent_rx, video_rx, head));
    }

    /// Writes everything the core produced. A full socket buffer drops the datagram (counted);
    /// the peer's NACK or the next keyframe repairs it.
    fn send_all(&mut self) {
        while let Some(Transmit {
            protocol,
            local,
            remote,
            data,
            video,
        }) = self.core.poll_transmit()
        {
            if protocol == TransportProtocol::TCP {
                self.send_tcp(local, remote, &data, video);
                continue;
            }
            let Some(s) = self
                .sockets
                .iter()
                .find(|s| s.tag == local)
                .or(self.sockets.first())
            else {
                break;
            };
            match s.socket.try_send_to(&data, remote) {
                Ok(_) => SfuMetrics::inc(&self.metrics.datagrams_out),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    SfuMetrics::inc(&self.metrics.drops_socket_full);
                }
                Err(e) => debug!("send_to {remote}: {e}"),
            }
        }
    }
}

/// Runs one signaling command on the core and answers its oneshot (a caller that went away is
/// not an error).
fn apply(core: &mut Core, cmd: Command, now: Instant) {
    match cmd {
        Command::Join {
            room,
            name,
            user,
            events,
            subscribes,
            reply,
        } => {
            let joined = if subscribes {
                core.join(room, name, user, events, now)
            } else {
                core.join_publisher(room, name, user, events, now)
            };
            let _ = reply.send(joined);
        }
        Command::PublishOffer {
            participant,
            sdp,
            tracks,
            reply,
        } => {
            let _ = reply.send(core.publish_offer(participant, sdp, tracks, now));
        }
        Command::TrackSettings {
            participant,
            track,
            settings,
            reply,
        } => {
            let _ = reply.send(core.track_settings(participant, &track, settings, now));
        }
        Command::SubscribeAnswer {
            participant,
            sdp,
            reply,
        } => {
            let _ = reply.send(core.subscribe_answer(participant, sdp, now));
        }
        Command::Candidate {
            participant,
            role,
            candidate,
            sdp_mid,
            sdp_mline_index,
            reply,
        } => {
            let _ = reply.send(core.add_candidate(
                participant,
                role,
                candidate,
                sdp_mid,
                sdp_mline_index,
                now,
            ));
        }
        Command::Mute {
            participant,
            source,
            muted,
        } => core.mute(participant, source, muted, now),
        Command::SendData {
            participant,
            label,
            text,
        } => core.send_data(participant, &label, text, now),
        Command::Broadcast {
            room,
            except,
            label,
            text,
        } => core.broadcast(&room, except, &label, &text, now),
        Command::Leave { participant } => core.leave(participant, now),
        Command::Detach {
            participant,
            attachment,
        } => core.detach(participant, attachment, now),
        Command::Resume {
            participant,
            token,
            user,
            events,
            reply,
        } => {
            let _ = reply.send(core.resume(participant, &token, &user, events, now));
        }
        Command::RestartIce { participant, reply } => {
            let _ = reply.send(core.restart_ice(participant, now));
        }
        Command::Host {
            host,
            action,
            reply,
        } => {
            let _ = reply.send(core.host(host, action, now));
        }
        Command::Snapshot { room, reply } => {
            let _ = reply.send(Ok(core.snapshot(room.as_ref())));
        }
        Command::KnowsUfrag { ufrag, reply } => {
            let _ = reply.send(Ok(core.knows_ufrag(&ufrag)));
        }
        Command::AdoptTcp { .. } | Command::Shutdown => {}
    }
}

impl Worker {
    /// Queues one RFC 4571 frame (2-byte length, then the packet) for a TCP connection: video
    /// RTP on its video queue, the rest on its urgent queue.
    fn send_tcp(&mut self, local: SocketAddr, remote: SocketAddr, data: &[u8], video: bool) {
        let tuple = FiveTuple {
            local_addr: local,
            peer_addr: remote,
            transport_protocol: TransportProtocol::TCP,
        };
        let Some(conn) = self.tcp_conns.get(&tuple) else {
            return; // the connection is gone; the peer reconnects or fails over
        };
        let Ok(len) = u16::try_from(data.len()) else {
            return;
        };
        let mut frame = BytesMut::with_capacity(2 + data.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(data);
        let now = Instant::now();
        let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let queued = if video {
            conn.video
                .try_send((now_us.max(1), frame.freeze()))
                .map_err(|e| matches!(e, mpsc::error::TrySendError::Closed(_)))
        } else {
            conn.urgent
                .try_send((now_us.max(1), frame.freeze()))
                .map_err(|e| matches!(e, mpsc::error::TrySendError::Closed(_)))
        };
        match queued {
            Ok(()) => SfuMetrics::inc(&self.metrics.datagrams_out),
            Err(false) => SfuMetrics::inc(&self.metrics.drops_tcp_queue_full),
            Err(true) => {
                self.tcp_conns.remove(&tuple);
                self.tcp_congested.retain(|t| *t != tuple);
                return;
            }
        }
        self.update_congestion(tuple, now);
    }

    /// Tells the core when a connection backs up (video off, [`TCP_CONGESTED_ABOVE`],
    /// [`TCP_CONGESTED_AFTER`]) or has drained (video restarts on a keyframe).
    fn update_congestion(&mut self, tuple: FiveTuple, now: Instant) {
        let Some(conn) = self.tcp_conns.get(&tuple) else {
            self.tcp_congested.retain(|t| *t != tuple);
            return;
        };
        let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let (queued, waited) = conn.backlog(now_us);
        let congested = self.tcp_congested.contains(&tuple);
        if !congested && (queued > TCP_CONGESTED_ABOVE || waited > TCP_CONGESTED_AFTER) {
            self.tcp_congested.push(tuple);
            self.core.set_congested(tuple, true, now);
        } else if congested && queued < TCP_DRAINED_BELOW && waited < TCP_DRAINED_AFTER {
            self.tcp_congested.retain(|t| *t != tuple);
            self.core.set_congested(tuple, false, now);
        }
    }

    /// Tells the core about backed-up connections that drained while nothing was sent to them.
    fn check_drained(&mut self, now: Instant) {
        let mut k = 0;
        while let Some(&tuple) = self.tcp_congested.get(k) {
            self.update_congestion(tuple, now);
            if self.tcp_congested.get(k) == Some(&tuple) {
                k += 1;
            }
        }
    }
}

/// Reads RFC 4571 frames from one ICE-TCP connection and hands them to the loop. Ends on EOF,
/// an error, [`TCP_IDLE`] of silence, or a frame longer than [`MAX_DATAGRAM`].
async fn read_frames(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    tuple: FiveTuple,
    to_loop: mpsc::Sender<TcpEvent>,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    'conn: loop {
        while buf.len() >= 2 {
            let n = u16::from_be_bytes([buf[0], buf[1]]) as usize;
            if n > MAX_DATAGRAM {
                debug!(remote = %tuple.peer_addr, "ICE-TCP frame of {n} bytes: closing");
                break 'conn;
            }
            if buf.len() < 2 + n {
                break;
            }
            buf.advance(2);
            let data = buf.split_to(n);
            if to_loop.send(TcpEvent::Frame { tuple, data }).await.is_err() {
                return;
            }
        }
        if buf.capacity() - buf.len() < MAX_DATAGRAM {
            buf.reserve(8 * 1024);
        }
        match tokio::time::timeout(TCP_IDLE, rd.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    let _ = to_loop.send(TcpEvent::Closed { tuple }).await;
}

/// Writes queued frames to one ICE-TCP connection, urgent ones before any video (between
/// frames: RFC 4571 framing keeps each whole), until the loop drops the queues or a write fails
/// (then the connection closes), publishing in `head` when the frame it writes was queued
/// (see [`TcpConn::head`]).
async fn write_frames<W: tokio::io::AsyncWrite + Unpin>(
    mut wr: W,
    mut urgent: mpsc::Receiver<(u64, Bytes)>,
    mut video: mpsc::Receiver<(u64, Bytes)>,
    head: Arc<AtomicU64>,
) {
    loop {
        let (queued_at, frame) = tokio::select! {
            biased;
            f = urgent.recv() => match f {
                Some(f) => f,
                None => return,
            },
            f = video.recv() => match f {
                Some(f) => f,
                None => return,
            },
        };
        head.store(queued_at, Ordering::Relaxed);
        if wr.write_all(&frame).await.is_err() {
            return;
        }
        if urgent.is_empty() && video.is_empty() {
            head.store(0, Ordering::Relaxed);
        }
    }
}

fn poll_accept_any(
    listeners: &[(TcpListener, SocketAddr)],
    cx: &mut std::task::Context<'_>,
) -> Poll<(usize, TcpStream, SocketAddr)> {
    for (i, (l, _)) in listeners.iter().enumerate() {
        match l.poll_accept(cx) {
            Poll::Ready(Ok((stream, remote))) => return Poll::Ready((i, stream, remote)),
            Poll::Ready(Err(e)) => debug!("accept: {e}"),
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

fn poll_recv_any(
    sockets: &[MediaSocket],
    buf: &mut BytesMut,
    cx: &mut std::task::Context<'_>,
) -> Poll<(usize, usize, SocketAddr)> {
    for (i, s) in sockets.iter().enumerate() {
        let spare = buf.spare_capacity_mut();
        let len = MAX_DATAGRAM.min(spare.len());
        let mut rb = tokio::io::ReadBuf::uninit(&mut spare[..len]);
        match s.socket.poll_recv_from(cx, &mut rb) {
            Poll::Ready(Ok(peer)) => {
                let n = rb.filled().len();
                // SAFETY: poll_recv_from initialised the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                return Poll::Ready((i, n, peer));
            }
            Poll::Ready(Err(e)) => {
                // ICMP port unreachable and the like surface here on some platforms: not fatal.
                debug!("recv_from: {e}");
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

fn try_recv(socket: &UdpSocket, buf: &mut BytesMut) -> Option<(usize, SocketAddr)> {
    let spare = buf.spare_capacity_mut();
    let len = MAX_DATAGRAM.min(spare.len());
    // SAFETY: u8 has no invalid bit patterns; the kernel writes at most `len` bytes and we only
    // expose the `n` it reports.
    let slice = unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr() as *mut u8, len) };
    match socket.try_recv_from(slice) {
        Ok((n, peer)) => {
            unsafe { buf.set_len(buf.len() + n) };
            Some((n, peer))
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(tag: u8, len: usize) -> Bytes {
        let mut f = vec![tag; 2 + len];
        f[..2].copy_from_slice(&(len as u16).to_be_bytes());
        Bytes::from(f)
    }

    /// A keyframe's worth of video is queued on a connection whose reader is slow; an audio
    /// frame queued after it is written before all but the video frames already taken.
    #[tokio::test]
    async fn urgent_frames_overtake_queued_video() {
        let (wr, mut rd) = tokio::io::duplex(4096);
        let (urgent_tx, urgent_rx) = mpsc::channel(TCP_URGENT_QUEUE);
        let (video_tx, video_rx) = mpsc::channel(TCP_WRITE_QUEUE);
        let head = Arc::new(AtomicU64::new(0));
        for _ in 0..40 {
            video_tx.try_send((1, frame(b'v', 1100))).unwrap();
        }
        let writer = tokio::spawn(write_frames(wr, urgent_rx, video_rx, head.clone()));
        // The writer has taken what fits in the pipe (under 4 video frames) and waits.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            head.load(Ordering::Relaxed),
            1,
            "a video frame is being written"
        );
        urgent_tx.try_send((2, frame(b'a', 120))).unwrap();
        let mut order = Vec::new();
        let mut buf = BytesMut::new();
        while order.len() < 41 {
            rd.read_buf(&mut buf).await.unwrap();
            while buf.len() >= 2 {
                let n = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                if buf.len() < 2 + n {
                    break;
                }
                order.push(buf[2]);
                buf.advance(2 + n);
            }
        }
        let audio_at = order.iter().position(|t| *t == b'a').unwrap();
        assert!(
            audio_at <= 5,
            "audio written after {audio_at} video frames: {order:?}"
        );
        assert_eq!(head.load(Ordering::Relaxed), 0, "no video left queued");
        drop(urgent_tx);
        drop(video_tx);
        writer.await.unwrap();
    }

    /// Reads one RFC 4571 frame's payload from `rd` (`None`: closed, or nothing within `wait`).
    async fn read_frame(rd: &mut tokio::net::TcpStream, wait: Duration) -> Option<Vec<u8>> {
        let mut len = [0u8; 2];
        let read = async {
            rd.read_exact(&mut len).await.ok()?;
            let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
            rd.read_exact(&mut payload).await.ok()?;
            Some(payload)
        };
        tokio::time::timeout(wait, read).await.ok().flatten()
    }

    /// Two workers: a room's participant is on the worker the room hashes to, and an ICE-TCP
    /// connection accepted elsewhere (the one-port front door) is handed to the worker whose
    /// transport its binding request names: that worker's core answers the check on it. A
    /// request that names no transport goes to worker 0, which drops it.
    #[tokio::test]
    async fn an_adopted_ice_tcp_connection_reaches_the_worker_that_owns_its_ufrag() {
        use crate::api::{worker_for_room, worker_of_participant, MediaInterface, PublishTrack};
        use crate::ids::{RoomId, TrackSource};
        use tokio::io::AsyncWriteExt;
        let config = MediaConfig {
            udp_port: 0,
            tcp_port: Some(0),
            tcp_shared_port: None,
            interfaces: vec![MediaInterface {
                bind: "127.0.0.1".parse().unwrap(),
                announce: "127.0.0.1".parse().unwrap(),
            }],
            max_participants: 16,
            resume_grace: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(20),
            workers: 2,
        };
        let (events, _keep) = broadcast::channel(ROOM_EVENTS);
        let mut workers = Vec::new();
        for i in 0..2 {
            workers.push(
                spawn_media_worker(config.clone(), i, events.clone())
                    .unwrap()
                    .0,
            );
        }
        assert_ne!(
            workers[0].udp_addrs, workers[1].udp_addrs,
            "each worker has its own socket"
        );
        let sfu = crate::SfuHandle::new(workers).unwrap();
        let room = (0..)
            .map(|i| RoomId::parse(&format!("room-{i}")).unwrap())
            .find(|r| worker_for_room(r, 2) == 1)
            .unwrap();
        let (tx, _rx) = crate::mailbox::mailbox();
        let info = sfu
            .join(room, "Ada".into(), "user-ada".into(), tx)
            .await
            .unwrap();
        assert_eq!(worker_of_participant(info.participant, 2), 1);
        assert_eq!(SfuMetrics::get(&sfu.workers()[1].metrics().participants), 1);
        assert_eq!(SfuMetrics::get(&sfu.workers()[0].metrics().participants), 0);
        let (_pc, offer, mid, _, _) = crate::core::tests::camera_publisher(
            "ada",
            "127.0.0.1:5000".parse().unwrap(),
            None,
            Instant::now(),
        );
        let answer = sfu
            .publish_offer(
                info.participant,
                offer.sdp.clone(),
                vec![PublishTrack {
                    mid,
                    source: TrackSource::Camera,
                }],
            )
            .await
            .unwrap();
        let offer_sdp = offer.sdp.clone();
        let attr = |sdp: &str, name: &str| {
            sdp.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .to_owned()
        };
        let (ufrag, pwd) = (attr(&answer, "a=ice-ufrag:"), attr(&answer, "a=ice-pwd:"));
        let peer_ufrag = attr(&offer_sdp, "a=ice-ufrag:");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let connect = |listener: &std::net::TcpListener| {
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server_side, remote) = listener.accept().unwrap();
            client.set_nonblocking(true).unwrap();
            (
                tokio::net::TcpStream::from_std(client).unwrap(),
                server_side,
                remote,
            )
        };
        let framed = |msg: &[u8]| {
            let mut f = (msg.len() as u16).to_be_bytes().to_vec();
            f.extend_from_slice(msg);
            f
        };

        let check = crate::routing::tests::request(&format!("{ufrag}:{peer_ufrag}"), &pwd, false);
        let (mut client, server_side, remote) = connect(&listener);
        sfu.adopt_ice_tcp(server_side, "127.0.0.1".parse().unwrap(), remote, &check)
            .await;
        client.write_all(&framed(&check)).await.unwrap();
        let reply = read_frame(&mut client, Duration::from_secs(10))
            .await
            .expect("the owning worker answers the check");
        assert_eq!(
            &reply[..2],
            &[0x01, 0x01],
            "a binding success response (RFC 8489 section 6)"
        );
        assert_eq!(&reply[8..20], &check[8..20], "for our transaction");
        assert_eq!(
            SfuMetrics::get(&sfu.workers()[1].metrics().tcp_connections),
            1
        );
        assert_eq!(
            SfuMetrics::get(&sfu.workers()[0].metrics().tcp_connections),
            0
        );

        let stranger = crate::routing::tests::request(&format!("nobody:{peer_ufrag}"), &pwd, false);
        let (mut client, server_side, remote) = connect(&listener);
        sfu.adopt_ice_tcp(server_side, "127.0.0.1".parse().unwrap(), remote, &stranger)
            .await;
        client.write_all(&framed(&stranger)).await.unwrap();
        assert!(
            read_frame(&mut client, Duration::from_secs(1))
                .await
                .is_none(),
            "a check naming no transport is not answered"
        );
        let tcp = |i: usize| SfuMetrics::get(&sfu.workers()[i].metrics().tcp_connections);
        assert_eq!((tcp(0), tcp(1)), (1, 1), "it went to worker 0");
        let failures = SfuMetrics::get(&sfu.workers()[0].metrics().stun_auth_failures);
        assert_eq!(failures, 1, "which dropped it, counted");
        sfu.shutdown().await;
    }

    #[test]
    fn rooms_spread_over_workers_and_participant_ids_name_theirs() {
        use crate::api::{worker_for_room, worker_of_participant};
        use crate::ids::{ParticipantId, RoomId};
        let mut per_worker = [0usize; 4];
        for i in 0..4000 {
            let room = RoomId::parse(&format!("study-group-{i}")).unwrap();
            let w = worker_for_room(&room, 4);
            assert_eq!(w, worker_for_room(&room, 4), "stable");
            per_worker[w] += 1;
        }
        for n in per_worker {
            assert!((800..1200).contains(&n), "an even spread: {per_worker:?}");
        }
        // A fixed value: the placement never changes between builds or nodes.
        // FNV-1a("lobby") = 0x1ccae3b6ef72f533.
        assert_eq!(worker_for_room(&RoomId::parse("lobby").unwrap(), 16), 3);
        assert_eq!(worker_for_room(&RoomId::parse("lobby").unwrap(), 1), 0);
        // Worker i of n hands out i + 1, i + 1 + n, ...
        for n in 1..5u64 {
            for i in 0..n {
                for k in 0..3 {
                    let id = ParticipantId(i + 1 + k * n);
                    assert_eq!(worker_of_participant(id, n as usize), i as usize);
                }
            }
        }
        assert_eq!(worker_of_participant(ParticipantId(0), 3), 0);
    }
}

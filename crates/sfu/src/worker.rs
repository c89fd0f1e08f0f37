//! The media worker: the I/O shell around the [`Core`]. One tokio task owns the UDP sockets
//! (one per announced interface, every peer on the same port) and the core; it reads datagrams,
//! commands and the clock, feeds them to the core, and writes what the core produces. Nothing is
//! shared: signaling reaches it through [`Command`]s and gets oneshot replies; counters are
//! relaxed atomics.

use crate::api::{Command, MediaConfig, RoomEvent, SfuHandle, SfuMetrics, COMMAND_QUEUE};
use crate::core::{Core, Transmit};
use crate::routing::udp_tuple;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
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

struct MediaSocket {
    socket: UdpSocket,
    /// The address rtc sees as the local side: the announced IP and the bound port (must equal
    /// a local candidate's address).
    tag: SocketAddr,
}

/// Starts the media worker on the current tokio runtime. Binds one UDP socket per configured
/// interface (errors: the bind error). Returns the handle, the room-lifecycle broadcast and the
/// task.
pub fn spawn_media_worker(
    config: MediaConfig,
) -> std::io::Result<(
    SfuHandle,
    broadcast::Sender<RoomEvent>,
    tokio::task::JoinHandle<()>,
)> {
    let mut sockets = Vec::new();
    for iface in &config.interfaces {
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(iface.bind, config.udp_port))?;
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
    let (room_events, _) = broadcast::channel(ROOM_EVENTS);
    let metrics = Arc::new(SfuMetrics::default());
    let udp_addrs = Arc::new(sockets.iter().map(|s| s.tag).collect::<Vec<_>>());
    let local: Vec<SocketAddr> = sockets.iter().map(|s| s.tag).collect();
    info!(addrs = ?local, "media worker listening (UDP)");
    let core = Core::new(
        local,
        config.max_participants,
        metrics.clone(),
        room_events.clone(),
        Instant::now(),
    );
    let worker = Worker {
        sockets,
        core,
        metrics: metrics.clone(),
        rx_buf: BytesMut::with_capacity(64 * 1024),
    };
    let task = tokio::spawn(worker.run(rx));
    Ok((
        SfuHandle {
            tx,
            metrics,
            udp_addrs,
        },
        room_events,
        task,
    ))
}

struct Worker {
    sockets: Vec<MediaSocket>,
    core: Core,
    metrics: Arc<SfuMetrics>,
    /// Receive buffer; each datagram is split off it, so allocation happens once per ~64 KiB
    /// rather than once per packet.
    rx_buf: BytesMut,
}

impl Worker {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let sleep = tokio::time::sleep(IDLE_TICK);
        tokio::pin!(sleep);
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
                    Some(cmd) => {
                        apply(&mut self.core, cmd, Instant::now());
                        self.send_all();
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
                _ = &mut sleep => {
                    self.core.handle_timeout(Instant::now());
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

    /// Writes everything the core produced. A full socket buffer drops the datagram (counted);
    /// the peer's NACK or the next keyframe repairs it.
    fn send_all(&mut self) {
        while let Some(Transmit {
            local,
            remote,
            data,
            ..
        }) = self.core.poll_transmit()
        {
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
            events,
            reply,
        } => {
            let _ = reply.send(core.join(room, name, events, now));
        }
        Command::PublishOffer {
            participant,
            sdp,
            tracks,
            reply,
        } => {
            let _ = reply.send(core.publish_offer(participant, sdp, tracks, now));
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
        Command::Shutdown => {}
    }
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

//! Admission limits on the entry points, so one client (one address, one token subject) can
//! only ever use up its own budget, never its neighbours': per-key token buckets
//! ([`KeyedLimiter`]), signaling sockets open at once per client address and per subject, and
//! new sockets and joins per second ([`SocketLimits`]).
//!
//! The client address is the TCP peer, except behind the one-port front door
//! ([`crate::front`]), which splices each TLS connection to the HTTP server over loopback and
//! records here which internal connection carries which client ([`ClientAddrs`]), so limits
//! still see the real address. Behind a reverse proxy of the operator's own, every client
//! shares the proxy's address, and so one budget.

use crate::signaling::ratelimit::TokenBucket;
use actix_web::{web, HttpRequest};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most keys (addresses, subjects) with a rate-limit bucket. Past it, buckets idle long enough
/// to be full again are dropped (no loss); if every one is busy, all are dropped, which loosens
/// the limit for a moment rather than refusing newcomers.
pub const MAX_TRACKED_KEYS: usize = 10_000;

/// Token buckets per key (an IP address, a token subject): `burst` at once, then `rate_per_s`.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    /// Sustained events per second per key.
    rate_per_s: f64,
    /// Events at once per key.
    burst: u32,
    /// Each key's bucket and when it was last used (to forget idle ones).
    buckets: Mutex<HashMap<K, (TokenBucket, Instant)>>,
}

/// Per-IP token buckets (the sign-in routes share one; the guest route and the signaling
/// socket each have their own).
pub type IpLimiter = KeyedLimiter<IpAddr>;

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `burst` events at once per key, then `rate_per_s` a second.
    pub fn new(rate_per_s: f64, burst: u32) -> Self {
        Self {
            rate_per_s,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one event from `key`'s budget: `false` when it is spent.
    pub fn allow(&self, key: &K, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(key) {
            // A bucket idle for burst/rate seconds is full again: forgetting it changes nothing.
            let refill = Duration::from_secs_f64(f64::from(self.burst) / self.rate_per_s);
            buckets.retain(|_, (_, last)| now.saturating_duration_since(*last) < refill);
            if buckets.len() >= MAX_TRACKED_KEYS {
                buckets.clear();
            }
        }
        let (bucket, last) = buckets
            .entry(key.clone())
            .or_insert_with(|| (TokenBucket::new(self.rate_per_s, self.burst, now), now));
        *last = now;
        bucket.allow(now)
    }
}

impl IpLimiter {
    /// Takes one request from the client's budget ([`client_ip`]): `false` when it is spent.
    pub fn allow_request(&self, req: &HttpRequest) -> bool {
        self.allow(&client_ip(req), Instant::now())
    }
}

/// Which client each of the front door's internal connections to the HTTP server carries, by
/// that connection's local port (registered for as long as the connection lives).
#[derive(Debug, Default)]
pub struct ClientAddrs {
    by_port: Mutex<HashMap<u16, IpAddr>>,
}

impl ClientAddrs {
    /// Records that the internal connection from `internal` carries `client`, until the guard
    /// is dropped.
    pub fn register(self: &Arc<Self>, internal: SocketAddr, client: IpAddr) -> ClientAddrGuard {
        self.by_port
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(internal.port(), client);
        ClientAddrGuard {
            addrs: Arc::clone(self),
            port: internal.port(),
        }
    }

    fn lookup(&self, internal: SocketAddr) -> Option<IpAddr> {
        if !internal.ip().is_loopback() {
            return None;
        }
        self.by_port
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&internal.port())
            .copied()
    }
}

/// Removes a [`ClientAddrs`] entry when the front door's connection ends.
pub struct ClientAddrGuard {
    addrs: Arc<ClientAddrs>,
    port: u16,
}

impl Drop for ClientAddrGuard {
    fn drop(&mut self) {
        self.addrs
            .by_port
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.port);
    }
}

/// The client's address: the TCP peer, or behind the front door the client it spliced
/// ([`ClientAddrs`], found in the app data). A request without a peer address counts as
/// `0.0.0.0`.
pub fn client_ip(req: &HttpRequest) -> IpAddr {
    let Some(peer) = req.peer_addr() else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    req.app_data::<web::Data<ClientAddrs>>()
        .and_then(|a| a.lookup(peer))
        .unwrap_or(peer.ip())
}

/// The budgets of the signaling entry point (`--max-sockets-per-ip`, `--max-sockets-per-user`,
/// `--joins-per-ip-per-min`, `--joins-per-user-per-min`; 0 turns one off).
#[derive(Debug, Clone, Copy)]
pub struct SocketLimitSettings {
    /// Signaling sockets open at once from one client address.
    pub sockets_per_ip: u32,
    /// Signaling sockets open at once with one token subject.
    pub sockets_per_user: u32,
    /// `join` and `resume` messages per minute from one address (also the burst).
    pub joins_per_ip_per_min: u32,
    /// `join` and `resume` messages per minute with one subject (also the burst).
    pub joins_per_user_per_min: u32,
}

/// Why a socket or a join was refused, with its stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// `too_many_connections`: this address or subject already has its most sockets open.
    #[error("too many open connections from this {0}; close one first")]
    TooManyConnections(&'static str),
    /// `rate_limited`: this address opens sockets (or joins) faster than its budget.
    #[error("too many {0}; retry in a few seconds")]
    RateLimited(&'static str),
}

/// Open signaling sockets per address and subject, and the rates of new sockets and joins.
#[derive(Debug)]
pub struct SocketLimits {
    settings: SocketLimitSettings,
    open_by_ip: Mutex<HashMap<IpAddr, u32>>,
    open_by_user: Mutex<HashMap<String, u32>>,
    /// New sockets per address: the open-at-once budget at once, then a tenth of it a second.
    opens_by_ip: IpLimiter,
    joins_by_ip: IpLimiter,
    joins_by_user: KeyedLimiter<String>,
    /// Changes others must hear of (mute toggles, publish offers) per subject, across all its
    /// sockets ([`CHANGES_PER_S`], [`CHANGES_BURST`]).
    changes_by_user: KeyedLimiter<String>,
}

/// Changes every other participant hears of (`mute`, `publish_offer`) per second per subject,
/// across all its sockets: far above what a person clicking does, far below a flood.
pub const CHANGES_PER_S: f64 = 2.0;
/// Burst of [`CHANGES_PER_S`] (a join publishes, a screen share starts, a few toggles).
pub const CHANGES_BURST: u32 = 20;

impl SocketLimits {
    /// Limits with these budgets.
    pub fn new(settings: SocketLimitSettings) -> Arc<Self> {
        fn per_min<K: Hash + Eq + Clone>(n: u32) -> KeyedLimiter<K> {
            KeyedLimiter::new(f64::from(n.max(1)) / 60.0, n.max(1))
        }
        let opens = settings.sockets_per_ip.max(1);
        Arc::new(Self {
            settings,
            open_by_ip: Mutex::new(HashMap::new()),
            open_by_user: Mutex::new(HashMap::new()),
            opens_by_ip: KeyedLimiter::new(f64::from(opens) / 10.0, opens),
            joins_by_ip: per_min(settings.joins_per_ip_per_min),
            joins_by_user: per_min(settings.joins_per_user_per_min),
            changes_by_user: KeyedLimiter::new(CHANGES_PER_S, CHANGES_BURST),
        })
    }

    /// Admits a new signaling socket from `ip` for `user`: a slot held until the returned guard
    /// drops. Errors: [`LimitError::TooManyConnections`] (`"address"` or `"user"`),
    /// [`LimitError::RateLimited`] (`"connections"`).
    pub fn open_socket(
        self: &Arc<Self>,
        ip: IpAddr,
        user: &str,
        now: Instant,
    ) -> Result<SocketSlot, LimitError> {
        let s = self.settings;
        {
            let mut by_ip = self.open_by_ip.lock().unwrap_or_else(|p| p.into_inner());
            let mut by_user = self.open_by_user.lock().unwrap_or_else(|p| p.into_inner());
            let ip_open = by_ip.get(&ip).copied().unwrap_or(0);
            let user_open = by_user.get(user).copied().unwrap_or(0);
            if s.sockets_per_ip > 0 && ip_open >= s.sockets_per_ip {
                return Err(LimitError::TooManyConnections("address"));
            }
            if s.sockets_per_user > 0 && user_open >= s.sockets_per_user {
                return Err(LimitError::TooManyConnections("user"));
            }
            if s.sockets_per_ip > 0 && !self.opens_by_ip.allow(&ip, now) {
                return Err(LimitError::RateLimited("connections"));
            }
            *by_ip.entry(ip).or_default() += 1;
            *by_user.entry(user.to_owned()).or_default() += 1;
        }
        Ok(SocketSlot {
            limits: Arc::clone(self),
            ip,
            user: user.to_owned(),
        })
    }

    /// Takes one `join` (or `resume`) from the budgets of `ip` and `user`. Errors:
    /// [`LimitError::RateLimited`] (`"joins"`).
    pub fn allow_join(&self, ip: IpAddr, user: &str, now: Instant) -> Result<(), LimitError> {
        let s = self.settings;
        let user_ok =
            s.joins_per_user_per_min == 0 || self.joins_by_user.allow(&user.to_owned(), now);
        let ip_ok = s.joins_per_ip_per_min == 0 || self.joins_by_ip.allow(&ip, now);
        if user_ok && ip_ok {
            Ok(())
        } else {
            Err(LimitError::RateLimited("joins"))
        }
    }

    /// Takes one change others hear of (a `mute`, a `publish_offer`) from `user`'s budget,
    /// shared by all its sockets. Errors: [`LimitError::RateLimited`] (`"changes"`).
    pub fn allow_change(&self, user: &str, now: Instant) -> Result<(), LimitError> {
        if self.changes_by_user.allow(&user.to_owned(), now) {
            Ok(())
        } else {
            Err(LimitError::RateLimited("changes"))
        }
    }

    /// Sockets open now (from all addresses).
    pub fn open_sockets(&self) -> u64 {
        let by_ip = self.open_by_ip.lock().unwrap_or_else(|p| p.into_inner());
        by_ip.values().map(|n| u64::from(*n)).sum()
    }

    fn close(&self, ip: IpAddr, user: &str) {
        fn release<K: Hash + Eq>(map: &Mutex<HashMap<K, u32>>, key: &K) {
            let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        release(&self.open_by_ip, &ip);
        release(&self.open_by_user, &user.to_owned());
    }
}

/// One open signaling socket's claim on its address's and subject's budgets: released on drop
/// (the session task holds it to its end).
#[derive(Debug)]
pub struct SocketSlot {
    limits: Arc<SocketLimits>,
    /// The client address it counts against.
    pub ip: IpAddr,
    user: String,
}

impl SocketSlot {
    /// Takes one `join` or `resume` from this socket's address's and subject's budgets.
    pub fn allow_join(&self, now: Instant) -> Result<(), LimitError> {
        self.limits.allow_join(self.ip, &self.user, now)
    }

    /// Takes one change others hear of from this socket's subject's budget
    /// ([`SocketLimits::allow_change`]).
    pub fn allow_change(&self, now: Instant) -> Result<(), LimitError> {
        self.limits.allow_change(&self.user, now)
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.limits.close(self.ip, &self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Arc<SocketLimits> {
        SocketLimits::new(SocketLimitSettings {
            sockets_per_ip: 4,
            sockets_per_user: 2,
            joins_per_ip_per_min: 6,
            joins_per_user_per_min: 3,
        })
    }

    #[test]
    fn open_sockets_are_capped_per_address_and_per_user_and_released_on_drop() {
        let l = limits();
        let t = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = l.open_socket(a, "u1", t).unwrap();
        let _s2 = l.open_socket(a, "u1", t).unwrap();
        assert_eq!(
            l.open_socket(b, "u1", t).unwrap_err(),
            LimitError::TooManyConnections("user")
        );
        let _s3 = l.open_socket(a, "u2", t).unwrap();
        let _s4 = l.open_socket(a, "u3", t).unwrap();
        assert_eq!(
            l.open_socket(a, "u4", t).unwrap_err(),
            LimitError::TooManyConnections("address")
        );
        // Another address is untouched by the first one's use.
        let _other = l.open_socket(b, "u5", t).unwrap();
        assert_eq!(l.open_sockets(), 5);
        drop(s1);
        assert_eq!(l.open_sockets(), 4);
        // (Its burst of new sockets is spent: 0.4 a second come back.)
        let _again = l.open_socket(a, "u1", t + Duration::from_secs(3)).unwrap();
    }

    #[test]
    fn opening_sockets_faster_than_the_budget_is_refused_even_when_each_closes() {
        let l = limits();
        let t = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for k in 0..4 {
            drop(l.open_socket(a, &format!("u{k}"), t).unwrap());
        }
        assert_eq!(
            l.open_socket(a, "u9", t).unwrap_err(),
            LimitError::RateLimited("connections")
        );
        // A tenth of the budget comes back every second: 0.4 sockets a second here.
        assert!(l.open_socket(a, "u9", t + Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn joins_are_budgeted_per_user_and_per_address() {
        let l = limits();
        let t = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            l.allow_join(a, "u1", t).unwrap();
        }
        assert_eq!(
            l.allow_join(a, "u1", t).unwrap_err(),
            LimitError::RateLimited("joins")
        );
        // u1's refusals spent some of the address's budget too (6 a minute): 2 are left.
        l.allow_join(a, "u2", t).unwrap();
        l.allow_join(a, "u3", t).unwrap();
        assert!(l.allow_join(a, "u4", t).is_err());
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        l.allow_join(b, "u5", t).unwrap();
        // A join per 20 s per user comes back.
        l.allow_join(b, "u1", t + Duration::from_secs(20)).unwrap();
    }
}

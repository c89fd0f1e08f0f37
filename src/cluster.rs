//! Several nodes, one deployment (issue 14, "Multi-node"). With `--redis-url`, each node keeps
//! two kinds of expiring keys in Redis:
//!
//! - `confab:node:<node id>` → the node's base URL (`--node-url`), renewed every third of
//!   `--cluster-ttl-s`;
//! - `confab:room:<room id>` → the id of the node that hosts the room, claimed by the first join
//!   there and renewed with the node's key while the room is open; deleted when it closes.
//!
//! A join is placed by [`Cluster::claim`]: a room nobody holds, or held by a node whose own key
//! has expired (it died), is taken here; a room held by a live node is answered with that node's
//! URL, and the signaling session sends the client a `redirect` (docs/protocol.md). A node that
//! dies stops renewing: its rooms are free within `--cluster-ttl-s`. Rooms are never split: one
//! node forwards all of a room's media.
//!
//! Redis being down never stops a node: [`Cluster::claim`] then answers [`Placement::Here`] (a
//! room may then open on two nodes until Redis is back; each is a working room) and the renew
//! loop logs and retries. Every command has a [`COMMAND_TIMEOUT`].

use crate::config::ConfigError;
use confab_sfu::{RoomEvent, RoomId, SfuHandle};
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

/// Prefix of a node's key (its id follows); the value is the node's base URL.
pub const NODE_KEY: &str = "confab:node:";
/// Prefix of a room's key (the room id follows); the value is the hosting node's id.
pub const ROOM_KEY: &str = "confab:room:";
/// Longest wait for one Redis command (a claim on the join path included).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Takes `KEYS[1]` (a room) for `ARGV[1]` (this node) for `ARGV[2]` s unless a live node holds
/// it (its node key, `ARGV[3]` .. owner, exists): returns `{1, me, ""}` when taken or renewed,
/// `{0, owner, owner's URL}` otherwise. One script, so two nodes racing for a room cannot both
/// win.
const CLAIM: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  local url = redis.call('GET', ARGV[3] .. owner)
  if url then return {0, owner, url} end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {1, ARGV[1], ''}
";

/// Renews `KEYS[1]` for `ARGV[2]` s if `ARGV[1]` (this node) holds it; 1 when renewed.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes `KEYS[1]` if `ARGV[1]` (this node) holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A Redis error's kind, for logs and messages (its text may quote the URL).
fn redis_kind(e: &redis::RedisError) -> String {
    format!("{:?}", e.kind())
}

/// Where a join belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On this node (taken, already held here, or Redis unreachable).
    Here,
    /// On another live node: its id and base URL (`--node-url` there).
    Elsewhere {
        /// The hosting node's id.
        node: String,
        /// Its base URL, e.g. `https://n2.example.com`.
        url: String,
    },
}

/// Settings of a node in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `redis://host:port/db` (never logged: it may hold a password).
    pub redis_url: String,
    /// This node's id (`--node-id`, distinct per node).
    pub node_id: String,
    /// This node's base URL as clients reach it.
    pub node_url: String,
    /// Life of the keys without renewal, s.
    pub ttl_s: u64,
}

/// This node's membership of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    conn: ConnectionManager,
    settings: Arc<ClusterSettings>,
}

impl Cluster {
    /// Connects to Redis and registers this node. Errors: a malformed URL or Redis not
    /// answering within [`COMMAND_TIMEOUT`] (at start, unlike later, that is fatal: a node that
    /// was told to join a cluster and cannot is misconfigured).
    pub async fn connect(settings: ClusterSettings) -> Result<Self, ConfigError> {
        let fail = |why: String| ConfigError::Cluster(why);
        let client = redis::Client::open(settings.redis_url.as_str()).map_err(|e| {
            fail(format!(
                "redis_url (--redis-url) is not a Redis URL: {}",
                redis_kind(&e)
            ))
        })?;
        let conn = tokio::time::timeout(COMMAND_TIMEOUT, ConnectionManager::new(client))
            .await
            .map_err(|_| fail("Redis did not answer within 2 s".into()))?
            .map_err(|e| fail(format!("Redis refused the connection: {}", redis_kind(&e))))?;
        let me = Self {
            conn,
            settings: Arc::new(settings),
        };
        me.register()
            .await
            .map_err(|e| fail(format!("registering this node in Redis: {e}")))?;
        info!(node = %me.settings.node_id, url = %me.settings.node_url, ttl_s = me.settings.ttl_s, "cluster: node registered in Redis");
        Ok(me)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// Where a join of `room` belongs; takes the room for this node when it is free. Redis
    /// errors and timeouts answer [`Placement::Here`] (logged): the node keeps serving.
    pub async fn claim(&self, room: &RoomId) -> Placement {
        let s = &self.settings;
        let mut conn = self.conn.clone();
        let script = redis::Script::new(CLAIM);
        let mut invocation = script.key(format!("{ROOM_KEY}{room}"));
        invocation.arg(&s.node_id).arg(s.ttl_s).arg(NODE_KEY);
        let call = invocation.invoke_async::<(i64, String, String)>(&mut conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok((1, _, _))) => Placement::Here,
            Ok(Ok((_, node, url))) => Placement::Elsewhere { node, url },
            Ok(Err(e)) => {
                warn!(%room, "cluster: claim failed ({}); serving the room here", redis_kind(&e));
                Placement::Here
            }
            Err(_) => {
                warn!(%room, "cluster: Redis did not answer the claim in time; serving the room here");
                Placement::Here
            }
        }
    }

    /// The `redirect` answering `m` when it is a `join` of a room another live node hosts
    /// (rooms are never split across nodes); `None` for anything else, for a room this node
    /// takes or holds, and for a join the session refuses anyway (a bad room id, or a token for
    /// another room than `token_room`).
    pub async fn redirect(
        &self,
        m: &confab_protocol::ClientMessage,
        token_room: Option<&str>,
    ) -> Option<confab_protocol::ServerMessage> {
        let confab_protocol::ClientMessage::Join { room, .. } = m else {
            return None;
        };
        if token_room.is_some_and(|r| r != room) {
            return None;
        }
        let id = RoomId::parse(room).ok()?;
        match self.claim(&id).await {
            Placement::Here => None,
            Placement::Elsewhere { url, .. } => Some(confab_protocol::ServerMessage::Redirect {
                url,
                room: room.clone(),
            }),
        }
    }

    /// Writes this node's key for one more TTL.
    async fn register(&self) -> Result<(), String> {
        let s = &self.settings;
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{NODE_KEY}{}", s.node_id))
            .arg(&s.node_url)
            .arg("EX")
            .arg(s.ttl_s);
        let call = cmd.query_async::<()>(&mut conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(redis_kind(&e)),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Runs `script` on `room`'s key with this node's id and the TTL.
    async fn on_room(&self, script: &str, room: &RoomId) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let script = redis::Script::new(script);
        let mut invocation = script.key(format!("{ROOM_KEY}{room}"));
        invocation
            .arg(&self.settings.node_id)
            .arg(self.settings.ttl_s);
        let call = invocation.invoke_async::<i64>(&mut conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(redis_kind(&e)),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Keeps this node and its rooms registered until the process ends: renews every third of
    /// the TTL (the rooms from the media plane's snapshot) and releases a room's key as it
    /// closes.
    pub fn spawn_upkeep(&self, sfu: SfuHandle, mut room_events: broadcast::Receiver<RoomEvent>) {
        let me = self.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs((me.settings.ttl_s / 3).max(1));
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => me.renew(&sfu).await,
                    ev = room_events.recv() => match ev {
                        Ok(RoomEvent::RoomClosed(room)) => {
                            if let Err(e) = me.on_room(RELEASE, &room).await {
                                debug!(%room, "cluster: release failed ({e}); the key expires on its own");
                            }
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
    }

    /// Renews this node's key and the key of every room open here.
    async fn renew(&self, sfu: &SfuHandle) {
        if let Err(e) = self.register().await {
            warn!("cluster: renewing this node's key failed ({e}); retrying");
            return;
        }
        let Ok(rooms) = sfu.snapshot(None).await else {
            return;
        };
        for r in rooms {
            if let Err(e) = self.on_room(RENEW, &r.id).await {
                warn!(room = %r.id, "cluster: renewing the room's key failed ({e})");
            }
        }
    }
}

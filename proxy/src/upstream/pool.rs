use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::connect::Connector;
use super::error::UpstreamError;
use crate::returning_body::ReturningBody;

pub type RequestSender = http1::SendRequest<Full<Bytes>>;

/// Connections are shared per (host, port): the address was checked when the
/// connection was dialled, and the TLS session names the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub host: String,
    pub port: u16,
}

struct Idle {
    sender: RequestSender,
    since: Instant,
    generation: Generation,
}

/// A connection's identity generation: connections made before the agent's
/// certificate changed (rotation, revocation) carry the old identity and are
/// not reused.
type Generation = u64;

/// Idle keep-alive connections, newest last (reused first: warm, least
/// likely to have been closed by the peer).
#[derive(Clone)]
pub struct Pool {
    idle: Arc<Mutex<IdleSet>>,
    generation: Arc<AtomicU64>,
    max_idle_per_key: usize,
    idle_timeout: Duration,
}

struct IdleSet {
    by_key: HashMap<PoolKey, Vec<Idle>>,
    /// Hosts that are not visited again would keep their dead connections
    /// forever; a sweep now and then drops them.
    last_sweep: Instant,
}

impl Pool {
    pub fn new(max_idle_per_key: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: Arc::new(Mutex::new(IdleSet {
                by_key: HashMap::new(),
                last_sweep: Instant::now(),
            })),
            generation: Arc::new(AtomicU64::new(0)),
            max_idle_per_key,
            idle_timeout,
        }
    }

    fn checkout(&self, key: &PoolKey) -> Option<(RequestSender, Generation)> {
        let mut idle = self.lock();
        let current = self.generation();
        let list = idle.by_key.get_mut(key)?;
        let now = Instant::now();
        while let Some(entry) = list.pop() {
            let fresh = now.duration_since(entry.since) < self.idle_timeout;
            let usable = fresh && entry.generation == current;
            if usable && entry.sender.is_ready() && !entry.sender.is_closed() {
                return Some((entry.sender, entry.generation));
            }
        }
        None
    }

    /// Drops every idle connection and keeps the busy ones from coming
    /// back: from now on, requests go over connections made with the
    /// current identity. Busy ones finish their exchange undisturbed.
    pub fn retire_all(&self) {
        // Under the lock that checkin and checkout hold, so no connection
        // is labelled with the new generation by mistake.
        let mut idle = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        idle.by_key.clear();
    }

    fn generation(&self) -> Generation {
        self.generation.load(Ordering::SeqCst)
    }

    fn checkin(&self, key: PoolKey, sender: RequestSender, generation: Generation) {
        if sender.is_closed() || self.max_idle_per_key == 0 {
            return;
        }
        let mut idle = self.lock();
        // Checked under the lock that retire_all clears under, so a
        // connection cannot slip in after a retirement it predates.
        if generation != self.generation() {
            return;
        }
        let now = Instant::now();
        let alive =
            |e: &Idle| now.duration_since(e.since) < self.idle_timeout && !e.sender.is_closed();
        if now.duration_since(idle.last_sweep) >= self.idle_timeout {
            idle.by_key.retain(|_, list| {
                list.retain(alive);
                !list.is_empty()
            });
            idle.last_sweep = now;
        }
        let list = idle.by_key.entry(key).or_default();
        // The list is oldest first, so the connections past the idle timeout
        // are at its front. Ones the peer closed meanwhile are skipped by
        // checkout and dropped by the sweep: looking at every idle
        // connection on every checkin cost more than the rest of the pool.
        let expired = list
            .iter()
            .take_while(|e| now.duration_since(e.since) >= self.idle_timeout)
            .count();
        list.drain(..expired);
        if list.len() >= self.max_idle_per_key {
            // Make room: a connection the peer has closed goes first (the
            // checkin no longer sweeps them out), else the oldest, the
            // likeliest to be closed next.
            let gone = list.iter().position(|e| e.sender.is_closed()).unwrap_or(0);
            list.remove(gone);
        }
        list.push(Idle {
            sender,
            since: now,
            generation,
        });
    }

    /// Number of idle connections (all hosts).
    pub fn idle_count(&self) -> usize {
        self.lock().by_key.values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleSet> {
        // The map holds no invariant a panic could break halfway.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sends requests upstream over pooled connections, dialling when none is idle.
#[derive(Clone)]
pub struct Upstream {
    pool: Pool,
    connector: Connector,
    response_timeout: Duration,
}

impl Upstream {
    pub fn new(pool: Pool, connector: Connector, response_timeout: Duration) -> Self {
        Upstream {
            pool,
            connector,
            response_timeout,
        }
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Sends `request` to `key`, dialling one of `addrs` (already checked by
    /// the policy) if no pooled connection is ready. `guard` lives as long as
    /// the response body (a concurrency permit, for instance).
    pub async fn send(
        &self,
        key: PoolKey,
        addrs: &[SocketAddr],
        mut request: Request<Full<Bytes>>,
        guard: Option<Box<dyn Send>>,
    ) -> Result<(Response<PooledBody>, Option<SocketAddr>), UpstreamError> {
        while let Some((sender, generation)) = self.pool.checkout(&key) {
            match self.exchange(sender, request, None).await? {
                Sent::Done(response, sender) => {
                    return Ok((self.wrap(key, response, sender, generation, guard), None))
                }
                // The pooled connection went away before the request was
                // written: nothing reached the upstream, so another
                // connection may carry it.
                Sent::NotSent(returned) => request = returned,
            }
        }
        // Read before dialling: a retirement during the handshake must
        // retire this connection too.
        let generation = self.pool.generation();
        let (sender, addr) = self.connector.connect(&key.host, addrs).await?;
        match self.exchange(sender, request, Some(addr)).await? {
            Sent::Done(response, sender) => Ok((
                self.wrap(key, response, sender, generation, guard),
                Some(addr),
            )),
            Sent::NotSent(_) => Err(UpstreamError::new(
                "upstream_connection_closed",
                format!("{addr} closed the new connection before the request was sent"),
            )),
        }
    }

    async fn exchange(
        &self,
        mut sender: RequestSender,
        request: Request<Full<Bytes>>,
        addr: Option<SocketAddr>,
    ) -> Result<Sent, UpstreamError> {
        // Named only in errors: no string on the way of a good exchange.
        let peer = || addr.map_or_else(|| "upstream".to_string(), |a| a.to_string());
        match tokio::time::timeout(self.response_timeout, sender.try_send_request(request)).await {
            Err(_) => Err(UpstreamError::timeout("waiting for the response", peer())),
            Ok(Ok(response)) => Ok(Sent::Done(response, sender)),
            Ok(Err(mut err)) => match err.take_message() {
                Some(request) => Ok(Sent::NotSent(request)),
                None => Err(UpstreamError::new(
                    "upstream_protocol_error",
                    format!("exchange with {} failed: {}", peer(), err.error()),
                )),
            },
        }
    }

    fn wrap(
        &self,
        key: PoolKey,
        response: Response<Incoming>,
        sender: RequestSender,
        generation: Generation,
        guard: Option<Box<dyn Send>>,
    ) -> Response<PooledBody> {
        let ticket = Ticket {
            pool: self.pool.clone(),
            key,
            sender,
            generation,
        };
        let stall = self.response_timeout;
        response.map(|inner| ReturningBody::new(inner, ticket, stall, "upstream", guard))
    }
}

enum Sent {
    Done(Response<Incoming>, RequestSender),
    NotSent(Request<Full<Bytes>>),
}

pub struct Ticket {
    pool: Pool,
    key: PoolKey,
    sender: RequestSender,
    generation: Generation,
}

impl crate::returning_body::Ticket for Ticket {
    /// The connection is reusable once hyper has finished the exchange,
    /// which it usually has by the time the body's end has been read: it is
    /// parked at once. Otherwise that is waited for off the response path.
    fn give_back(self) {
        let Ticket {
            pool,
            key,
            mut sender,
            generation,
        } = self;
        if sender.is_ready() {
            pool.checkin(key, sender, generation);
            return;
        }
        tokio::spawn(async move {
            let ready = tokio::time::timeout(Duration::from_secs(5), sender.ready()).await;
            if matches!(ready, Ok(Ok(()))) {
                pool.checkin(key, sender, generation);
            }
        });
    }
}

/// An upstream response body: returns its connection when read to the end.
pub type PooledBody = ReturningBody<Ticket>;

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    fn key() -> PoolKey {
        PoolKey {
            host: "api.exchange.com".into(),
            port: 443,
        }
    }

    /// A client connection over a pipe; the other end is the peer.
    async fn connection() -> (RequestSender, DuplexStream) {
        let (client, peer) = tokio::io::duplex(64 * 1024);
        let (sender, conn) = http1::handshake(TokioIo::new(client)).await.unwrap();
        tokio::spawn(conn);
        (sender, peer)
    }

    /// One exchange over a new connection whose peer answers `answer`;
    /// its body read to the end through the pool's ticket, unless the pool
    /// is retired after the head (`retire_after_head`).
    async fn exchange(pool: &Pool, answer: &'static [u8], retire_after_head: bool) {
        let (mut sender, mut peer) = connection().await;
        tokio::spawn(async move {
            // The request first: an answer before it is no answer.
            let mut request = [0u8; 1024];
            let _ = peer.read(&mut request).await.unwrap();
            peer.write_all(answer).await.unwrap();
            // Held open, silent, until the test ends.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let generation = pool.generation();
        let request = Request::post("/v1/trades")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        if retire_after_head {
            pool.retire_all();
        }
        let ticket = Ticket {
            pool: pool.clone(),
            key: key(),
            sender,
            generation,
        };
        let body = ReturningBody::new(
            response.into_body(),
            ticket,
            Duration::from_secs(5),
            "upstream",
            None,
        );
        body.collect().await.unwrap();
        // Whichever way the connection came back (at once or after hyper
        // finished with it), it is back by now.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";

    #[tokio::test]
    async fn a_finished_exchange_parks_its_connection() {
        let pool = Pool::new(4, Duration::from_secs(90));
        exchange(&pool, OK, false).await;
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closes_is_not_parked() {
        let pool = Pool::new(4, Duration::from_secs(90));
        let closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc";
        exchange(&pool, closing, false).await;
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_connection_from_before_a_retirement_is_not_parked() {
        let pool = Pool::new(4, Duration::from_secs(90));
        exchange(&pool, OK, true).await;
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_full_pool_makes_room_by_dropping_a_closed_connection_first() {
        let pool = Pool::new(2, Duration::from_secs(90));
        let generation = pool.generation();
        let (oldest, _oldest_peer) = connection().await;
        let (closing, closing_peer) = connection().await;
        pool.checkin(key(), oldest, generation);
        pool.checkin(key(), closing, generation);
        // The second one's peer hangs up while it is parked.
        drop(closing_peer);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (newest, _newest_peer) = connection().await;
        // Ready once its connection task has run, as a parked one is.
        tokio::time::sleep(Duration::from_millis(50)).await;
        pool.checkin(key(), newest, generation);
        assert_eq!(pool.idle_count(), 2);
        // Both that are left are live: the newest, then the oldest.
        assert!(pool.checkout(&key()).is_some());
        assert!(pool.checkout(&key()).is_some());
        assert!(pool.checkout(&key()).is_none());
    }

    #[tokio::test]
    async fn expired_connections_are_not_handed_out() {
        let pool = Pool::new(4, Duration::from_millis(100));
        let generation = pool.generation();
        let (stale, _stale_peer) = connection().await;
        pool.checkin(key(), stale, generation);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(pool.checkout(&key()).is_none());
        let (fresh, _fresh_peer) = connection().await;
        pool.checkin(key(), fresh, generation);
        assert_eq!(
            pool.idle_count(),
            1,
            "the expired one was dropped at checkin"
        );
    }
}

//! The hop to the backend: plain HTTP/1.1 to one address, over kept-alive
//! connections. The egress proxy's pool (`crate::upstream`) dials TLS with
//! the agent's identity; this one needs neither, nor several hosts.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::returning_body::ReturningBody;

type Sender = http1::SendRequest<Full<Bytes>>;

/// Idle connections kept; more concurrent requests dial more, and the
/// surplus closes when they finish.
const MAX_IDLE: usize = 64;
/// An idle connection older than this is not reused: the backend may have
/// closed it (many servers time out idle connections after 60 s or more).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub(super) enum BackendError {
    #[error("cannot connect to the backend {addr}: {message}")]
    Connect { addr: SocketAddr, message: String },
    #[error("the backend {addr} did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("the exchange with the backend {addr} failed: {message}")]
    Exchange { addr: SocketAddr, message: String },
}

impl BackendError {
    pub fn code(&self) -> &'static str {
        match self {
            BackendError::Connect { .. } => "backend_unavailable",
            BackendError::Timeout { .. } => "backend_timeout",
            BackendError::Exchange { .. } => "backend_protocol_error",
        }
    }
}

pub(super) struct Backend {
    addr: SocketAddr,
    timeout: Duration,
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl Backend {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Backend {
        Backend {
            addr,
            timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request`, over an idle connection if one is ready.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<BackendBody>, BackendError> {
        while let Some(sender) = self.checkout() {
            match self.exchange(sender, request).await? {
                Sent::Done(response, sender) => return Ok(self.wrap(response, sender)),
                // The idle connection closed before the request was written:
                // nothing reached the backend, so another may carry it.
                Sent::NotSent(returned) => request = returned,
            }
        }
        let sender = self.dial().await?;
        match self.exchange(sender, request).await? {
            Sent::Done(response, sender) => Ok(self.wrap(response, sender)),
            Sent::NotSent(_) => Err(BackendError::Exchange {
                addr: self.addr,
                message: "the new connection closed before the request was sent".into(),
            }),
        }
    }

    async fn dial(&self) -> Result<Sender, BackendError> {
        let connect = async {
            let tcp = TcpStream::connect(self.addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let (sender, connection) = http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok::<_, String>(sender)
        };
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(sender)) => Ok(sender),
            Ok(Err(message)) => Err(BackendError::Connect {
                addr: self.addr,
                message,
            }),
            Err(_) => Err(BackendError::Timeout {
                addr: self.addr,
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        mut sender: Sender,
        request: Request<Full<Bytes>>,
    ) -> Result<Sent, BackendError> {
        match tokio::time::timeout(self.timeout, sender.try_send_request(request)).await {
            Err(_) => Err(BackendError::Timeout {
                addr: self.addr,
                timeout: self.timeout,
            }),
            Ok(Ok(response)) => Ok(Sent::Done(response, sender)),
            Ok(Err(mut err)) => match err.take_message() {
                Some(request) => Ok(Sent::NotSent(request)),
                None => Err(BackendError::Exchange {
                    addr: self.addr,
                    message: err.error().to_string(),
                }),
            },
        }
    }

    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.lock();
        while let Some((sender, since)) = idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT && sender.is_ready() && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        idle.retain(|(s, since)| since.elapsed() < IDLE_TIMEOUT && !s.is_closed());
        if idle.len() >= MAX_IDLE {
            // The oldest is the likeliest to be closed by the backend.
            idle.remove(0);
        }
        idle.push((sender, Instant::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Sender, Instant)>> {
        // A list of connections holds no invariant a panic could break.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wrap(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: Sender,
    ) -> Response<BackendBody> {
        let ticket = Returned(self.clone(), sender);
        let stall = self.timeout;
        response.map(|inner| ReturningBody::new(inner, ticket, stall, "backend", None))
    }
}

enum Sent {
    Done(Response<Incoming>, Sender),
    NotSent(Request<Full<Bytes>>),
}

/// Returns a finished backend connection to the idle list.
pub(super) struct Returned(Arc<Backend>, Sender);

impl crate::returning_body::Ticket for Returned {
    /// The connection is reusable once hyper has finished the exchange; wait
    /// for that off the response path, then park it.
    fn give_back(self) {
        let Returned(backend, mut sender) = self;
        tokio::spawn(async move {
            let ready = tokio::time::timeout(Duration::from_secs(5), sender.ready()).await;
            if matches!(ready, Ok(Ok(()))) {
                backend.checkin(sender);
            }
        });
    }
}

/// A backend response body: returns its connection when read to the end;
/// a backend that stops sending mid-body is cut off after the backend
/// timeout.
pub(super) type BackendBody = ReturningBody<Returned>;

//! Upstream side: pinned-CA mTLS connections, pooled with keep-alive.

mod connect;
mod error;
mod pool;
mod tls;

pub use connect::Connector;
pub use error::UpstreamError;
pub use pool::{Pool, PoolKey, PooledBody, Upstream};
pub use tls::client_config;

//! Plain data types of the policy and of a decision.

use std::net::IpAddr;

use crate::error::Denial;
use crate::hours::HoursWindow;
use crate::rate::RateLimit;

/// `"enforce"` refuses denied requests; `"report"` lets the proxy log them as would-deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    Report,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Report => "report",
        }
    }
}

/// `revocation_check`. Defaults: enabled, 5 s cache, fail closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationCheck {
    pub enabled: bool,
    pub cache_ttl_seconds: u32,
    pub fail_open: bool,
}

impl Default for RevocationCheck {
    fn default() -> Self {
        RevocationCheck {
            enabled: true,
            cache_ttl_seconds: 5,
            fail_open: false,
        }
    }
}

/// `execution_constraints`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionConstraints {
    /// Empty = any region.
    pub allowed_regions: Vec<String>,
    pub allowed_hours: Option<HoursWindow>,
    pub max_concurrent_trades: Option<u32>,
    pub rate_limit: Option<RateLimit>,
}

/// A `data_access` permission (enforced by the OS layer, not by this crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
    Execute,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Execute => "execute",
        }
    }
}

/// One `data_access` entry: a path glob and what the agent may do there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataAccessRule {
    pub path: String,
    pub access: Vec<Access>,
}

/// Facts about the moment of a request that are not in the request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub now_unix_secs: i64,
    /// Where the proxy runs (its configuration's `region`); None = unknown.
    pub region: Option<String>,
}

/// Everything about one request, for `Policy::decide`.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// As the agent wrote it, without the port.
    pub host: &'a str,
    /// Request path, possibly with `?query`.
    pub path: &'a str,
    /// The addresses DNS gave for the host (ignored in favour of the literal for IP hosts
    /// when empty).
    pub resolved: &'a [IpAddr],
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `action`: index into `Policy::actions()` of the rule that matched, if any.
    Allow {
        action: Option<usize>,
    },
    Deny(Denial),
}

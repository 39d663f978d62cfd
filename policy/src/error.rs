//! Load-time errors (a policy file that must not be used) and run-time denials.

use std::fmt;

/// One problem in a policy file, positioned so an editor can jump to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}:{column}: {key}: {message}")]
pub struct PolicyError {
    pub source_name: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Path of the offending key, e.g. `network_rules.allowd_hosts` or `actions[2].body./size.max`.
    pub key: String,
    pub message: String,
}

/// Every problem found in a policy file (loading does not stop at the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// Why a request was refused; `as_str()` is the stable code the proxy puts on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyCode {
    MalformedTarget,
    HostDenied,
    DestinationDenied,
    ActionDenied,
    OutsideAllowedHours,
    RegionDenied,
}

impl DenyCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyCode::MalformedTarget => "malformed_target",
            DenyCode::HostDenied => "host_denied",
            DenyCode::DestinationDenied => "destination_denied",
            DenyCode::ActionDenied => "action_denied",
            DenyCode::OutsideAllowedHours => "outside_allowed_hours",
            DenyCode::RegionDenied => "region_denied",
        }
    }
}

impl fmt::Display for DenyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the code for machines, the message (what and why) for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Denial {
    pub code: DenyCode,
    pub message: String,
}

impl Denial {
    pub fn new(code: DenyCode, message: impl Into<String>) -> Self {
        Denial {
            code,
            message: message.into(),
        }
    }
}

//! Kakunin's scope policy: the agent's policy file parsed and validated (every error with
//! its line and column), and the decisions the proxy's pipeline asks of it.
//!
//! Pure: no I/O, no clock, no async. Callers pass the file's text, the time and the
//! resolved addresses. Everything fails closed: what cannot be read with certainty is
//! refused.

#![forbid(unsafe_code)]

mod action;
mod body;
mod canonical;
mod cidr;
mod decide;
mod decimal;
mod error;
mod glob;
mod host;
mod hours;
mod jvalue;
mod model;
mod parse;
mod path;
mod rate;
mod spanned;

pub use action::ActionRule;
pub use cidr::default_denied_cidrs;
pub use error::{Denial, DenyCode, PolicyError, PolicyErrors};
pub use host::{normalize_host, Target};
pub use hours::HoursWindow;
pub use model::{
    Access, Context, DataAccessRule, Decision, ExecutionConstraints, Mode, RequestFacts,
    RevocationCheck,
};
pub use rate::RateLimit;

use cidr::DeniedNet;
use host::HostPattern;

/// A loaded, validated scope policy.
#[derive(Debug, Clone)]
pub struct Policy {
    agent_id: String,
    version: Option<String>,
    mode: Mode,
    execution: ExecutionConstraints,
    data_access: Vec<DataAccessRule>,
    allowed_hosts: Vec<HostPattern>,
    denied_hosts: Vec<HostPattern>,
    policy_cidrs: Vec<ipnet::IpNet>,
    denied_nets: Vec<DeniedNet>,
    revocation: RevocationCheck,
    actions: Vec<ActionRule>,
    canonical: String,
}

impl Policy {
    /// Parses and validates a policy file (JSON with `//` and `/* */` comments).
    /// `source_name` (usually the file name) prefixes every error.
    pub fn from_json_str(source_name: &str, text: &str) -> Result<Policy, PolicyErrors> {
        parse::load(source_name, text)
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn revocation(&self) -> &RevocationCheck {
        &self.revocation
    }

    /// `execution_constraints.rate_limit`.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.execution.rate_limit.clone()
    }

    /// `execution_constraints.max_concurrent_trades`.
    pub fn max_concurrent_actions(&self) -> Option<u32> {
        self.execution.max_concurrent_trades
    }

    pub fn execution_constraints(&self) -> &ExecutionConstraints {
        &self.execution
    }

    /// `data_access`, for the OS layer.
    pub fn data_access(&self) -> &[DataAccessRule] {
        &self.data_access
    }

    pub fn actions(&self) -> &[ActionRule] {
        &self.actions
    }

    /// The networks `check_addresses` refuses: the defaults, then `denied_cidrs`.
    pub fn denied_networks(&self) -> Vec<ipnet::IpNet> {
        self.denied_nets.iter().map(|d| d.net).collect()
    }

    /// RFC 8785 (JCS) canonical JSON of the document as written (comments removed); this
    /// goes into the certificate's scope extension.
    pub fn canonical_json(&self) -> &str {
        &self.canonical
    }

    /// Human-readable effective policy (pretty JSON of the parsed model including defaults)
    /// for `kakunin policy check`.
    pub fn effective_json(&self) -> String {
        canonical::effective_json(self)
    }
}

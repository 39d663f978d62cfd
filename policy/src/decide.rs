//! The checks the proxy runs for each request, in pipeline order.

use std::net::IpAddr;

use crate::action;
use crate::cidr;
use crate::error::{Denial, DenyCode};
use crate::host::{self, Target};
use crate::model::{Context, Decision, RequestFacts};
use crate::{ActionRule, Policy};

impl Policy {
    /// Normalises the host and applies `denied_hosts` (wins) and `allowed_hosts` (no match,
    /// or no list at all, = denied).
    pub fn target(&self, raw_host: &str) -> Result<Target, Denial> {
        let t = host::normalize_host(raw_host)?;
        let forms = t.forms();
        for (form, _) in forms.iter() {
            if let Some(p) = self.denied_hosts.iter().find(|p| p.is_match(form)) {
                let via = if form == t.host {
                    String::new()
                } else {
                    format!(" (embedded IPv4 {form})")
                };
                return Err(Denial::new(
                    DenyCode::HostDenied,
                    format!(
                        "host {}{via} matches denied_hosts entry {:?}",
                        t.host, p.written
                    ),
                ));
            }
        }
        let allowed = forms
            .iter()
            .any(|(f, may_allow)| may_allow && self.allowed_hosts.iter().any(|p| p.is_match(f)));
        if allowed {
            return Ok(t);
        }
        let why = if self.allowed_hosts.is_empty() {
            "the policy has no network_rules.allowed_hosts, so every host is denied"
        } else {
            "it matches no network_rules.allowed_hosts entry"
        };
        Err(Denial::new(
            DenyCode::HostDenied,
            format!("host {} is not allowed: {why}", t.host),
        ))
    }

    /// Every address must be outside the denied networks (defaults + `denied_cidrs`),
    /// including IPv4 addresses embedded in IPv6 ones. An IP-literal target's own address
    /// is checked too. No addresses at all is a denial: nothing checked, nothing dialled.
    pub fn check_addresses(&self, target: &Target, addrs: &[IpAddr]) -> Result<(), Denial> {
        if addrs.is_empty() {
            return Err(Denial::new(
                DenyCode::DestinationDenied,
                format!("host {}: no resolved address to check", target.host),
            ));
        }
        for a in target.ip.iter().chain(addrs) {
            if let Some(reason) = cidr::denial_reason(*a, &self.denied_nets) {
                return Err(Denial::new(
                    DenyCode::DestinationDenied,
                    format!("host {}: {reason}", target.host),
                ));
            }
        }
        Ok(())
    }

    /// The first action rule matching method, host and path (None: no rule applies).
    /// Paths that servers could read differently from this check are refused.
    pub fn action_for(
        &self,
        method: &str,
        target: &Target,
        path: &str,
    ) -> Result<Option<&ActionRule>, Denial> {
        action::check_method(method)?;
        let path = action::request_path(path)?;
        let forms = target.forms();
        Ok(self
            .actions
            .iter()
            .find(|r| r.matches(method, &forms, &path)))
    }

    /// The body constraints of `action` (nothing to check when it has none).
    pub fn check_body(&self, action: &ActionRule, body: &[u8]) -> Result<(), Denial> {
        action::check_rule_body(action, body)
    }

    /// `allowed_hours` and `allowed_regions`.
    pub fn check_execution(&self, ctx: &Context) -> Result<(), Denial> {
        let ex = &self.execution;
        if let Some(w) = ex.allowed_hours {
            if !w.contains(ctx.now_unix_secs) {
                let m = ctx.now_unix_secs.rem_euclid(86_400) / 60;
                return Err(Denial::new(
                    DenyCode::OutsideAllowedHours,
                    format!(
                        "it is {:02}:{:02} UTC, outside allowed_hours {w}",
                        m / 60,
                        m % 60
                    ),
                ));
            }
        }
        if !ex.allowed_regions.is_empty() {
            let list = ex.allowed_regions.join(", ");
            match ctx.region.as_deref() {
                None => {
                    return Err(Denial::new(
                        DenyCode::RegionDenied,
                        format!(
                            "the proxy's region is not configured; allowed_regions is [{list}]"
                        ),
                    ))
                }
                Some(r) if !ex.allowed_regions.iter().any(|a| a == r) => {
                    return Err(Denial::new(
                        DenyCode::RegionDenied,
                        format!("region {r} is not in allowed_regions [{list}]"),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// All stages at once, in pipeline order, for callers that have every fact.
    pub fn decide(&self, req: &RequestFacts<'_>, ctx: &Context) -> Decision {
        match self.run(req, ctx) {
            Ok(action) => Decision::Allow { action },
            Err(d) => Decision::Deny(d),
        }
    }

    fn run(&self, req: &RequestFacts<'_>, ctx: &Context) -> Result<Option<usize>, Denial> {
        let t = self.target(req.host)?;
        let addrs = match (&t.ip, req.resolved.is_empty()) {
            (Some(ip), true) => std::slice::from_ref(ip),
            _ => req.resolved,
        };
        self.check_addresses(&t, addrs)?;
        let action = self.action_for(req.method, &t, req.path)?;
        if let Some(a) = action {
            self.check_body(a, req.body)?;
        }
        self.check_execution(ctx)?;
        Ok(action.map(|a| a.index))
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;

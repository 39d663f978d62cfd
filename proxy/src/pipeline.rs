//! One agent request through DESIGN.md's pipeline, in its order:
//! normalise → host rules → resolve once → denied networks → action rule and
//! body → execution constraints and limits → revocation gate (+ staple) →
//! signature → audit intent → forward over the pool → answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use kakunin_policy::{Context, Denial, Mode, Policy, Target};

use crate::audit::AuditLog;
use crate::batch_signer::BatchSigner;
use crate::body::ProxyBody;
use crate::clock::unix_now;
use crate::errors::ProxyError;
use crate::headers;
use crate::limits::Limits;
use crate::resolve::{resolve, Resolved};
use crate::revocation::{RevocationGate, OCSP_HEADER};
use crate::signing;
use crate::trail::{Trail, WouldDeny};
use crate::upstream::{PoolKey, Upstream};

pub struct Settings {
    pub region: Option<String>,
    pub body_limit: usize,
    pub body_read_timeout: Duration,
    pub pinned: std::collections::BTreeMap<String, std::net::SocketAddr>,
    pub dns_timeout: Duration,
    /// `expires` - `created` of request signatures.
    pub signature_lifetime_secs: u64,
}

pub struct Proxy {
    pub policy: Policy,
    pub limits: Limits,
    pub upstream: Upstream,
    pub audit: Arc<AuditLog>,
    pub settings: Settings,
    /// Owns the certificate in use (rotation replaces it there).
    pub gate: Arc<RevocationGate>,
    /// Set when request signatures are batched (`[signing] batch`).
    pub batcher: Option<BatchSigner>,
}

impl Proxy {
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let mut trail = Trail::new(
            self.policy.agent_id(),
            self.gate.subject(),
            request.method().clone(),
            request.uri().path(),
        );
        let outcome = self.process(request, &mut trail).await;
        trail.duration_ms = Some(started.elapsed().as_millis() as u64);
        match outcome {
            Ok(response) => {
                trail.status = Some(response.status().as_u16());
                // Before the agent hears back, so the log is never behind it.
                self.audit
                    .record_fields("action.completed", &trail)
                    .written()
                    .await;
                response
            }
            Err(err) => {
                trail.status = Some(err.status.as_u16());
                trail.decision = Some("deny");
                trail.code = Some(err.code);
                tracing::info!(code = err.code, reason = %err.message, "request refused");
                trail.reason = Some(err.message.clone());
                self.audit
                    .record_fields("action.refused", &trail)
                    .written()
                    .await;
                err.into_response()
            }
        }
    }

    async fn process<'p>(
        &'p self,
        request: Request<Incoming>,
        trail: &mut Trail<'p>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // A halted identity refuses everything, before any other check can
        // give a misleading answer (a rate limit, say) or spend budget.
        if let Some(halt) = self.gate.halted() {
            return Err(crate::revocation::revoked_error(&halt));
        }
        // 1. Accept: the request must be one we can forward faithfully.
        if request.method() == Method::CONNECT {
            return Err(ProxyError::connect_refused(
                "CONNECT (HTTPS through the proxy) is not supported: send plain http:// URLs; \
                 the proxy itself opens mutual TLS to the upstream",
            ));
        }
        // Body framing is hyper's: conflicting Content-Length values and a
        // non-chunked Transfer-Encoding are refused with 400; with both
        // Content-Length and chunked Transfer-Encoding, the chunked framing
        // wins and the connection is closed after the response (RFC 9112
        // §6.3). The body is re-framed with its own length upstream, so the
        // upstream never sees the agent's framing.
        check_host_header(request.headers())?;
        let (raw_host, port) = absolute_target(request.uri())?;

        // 2-3. Normalise the host and apply the host rules.
        let target = match self.policy.target(&raw_host) {
            Ok(target) => target,
            Err(denial) if self.reportable(&denial) => {
                let target = kakunin_policy::normalize_host(&raw_host)?;
                self.would_deny(trail, denial);
                target
            }
            Err(denial) => return Err(denial.into()),
        };
        trail.host = Some(target.host.clone());
        trail.port = Some(port);

        // 4. Resolve once; the addresses that pass are the ones dialled.
        let resolved = resolve(
            &target,
            port,
            &self.settings.pinned,
            self.settings.dns_timeout,
        )
        .await?;
        if let Resolved::Checked(addrs) = &resolved {
            let ips: Vec<_> = addrs.iter().map(|a| a.ip()).collect();
            self.enforce(self.policy.check_addresses(&target, &ips), trail)?;
        }
        let addrs = resolved.addrs();

        // 5. Action rule, body (buffered up to the limit) and its constraints.
        let (parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let action = match self
            .policy
            .action_for(parts.method.as_str(), &target, &path)
        {
            Ok(action) => action,
            Err(denial) => return Err(denial.into()),
        };
        let body = tokio::time::timeout(
            self.settings.body_read_timeout,
            read_body(&parts.headers, body, self.settings.body_limit),
        )
        .await
        .map_err(|_| {
            ProxyError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {:?}",
                    self.settings.body_read_timeout
                ),
            )
        })??;
        if let Some(rule) = action {
            trail.action = Some(rule.name.as_str());
            self.enforce(self.policy.check_body(rule, &body), trail)?;
        }

        // 6. Execution constraints and limits.
        let ctx = Context {
            now_unix_secs: unix_now(),
            region: self.settings.region.clone(),
        };
        self.enforce(self.policy.check_execution(&ctx), trail)?;
        let is_action = action.is_some() || !is_safe_method(&parts.method);
        let mut slot = None;
        if is_action {
            // Slot first: a request refused for concurrency uses no rate budget.
            slot = self
                .enforce_limit(self.limits.acquire_slot(), trail)?
                .flatten();
            self.enforce_limit(self.limits.check_rate(action.map(|a| a.index)), trail)?;
        }

        // 7. Revocation gate: never skipped, and a revoked identity halts
        // even in report mode.
        let mut admission = self.gate.admit().await?;
        if !self.gate.presents(&admission.subject) {
            // A rotation landed between the check and now: check the
            // certificate that the handshake will present.
            admission = self.gate.admit().await?;
        }
        trail.subject = admission.subject.clone();
        trail.revocation = Some(admission.status);
        trail.revocation_error = admission.note.take();

        // 8. Sign the request as it will leave: built first (hop-by-hop and
        // agent-supplied proof headers gone, Host and path final, staple
        // attached), so that the signature covers exactly what the upstream
        // receives. Report mode does not change this: the decision is the
        // rule's and the method's only.
        let sign = signing::should_sign(action, &parts.method);
        let mut upstream_request =
            build_upstream_request(parts, &path, &target, port, body.clone())?;
        if let Some(staple) = admission.staple {
            upstream_request.headers_mut().insert(OCSP_HEADER, staple);
        }
        let signed = if sign {
            Some(
                signing::sign(
                    &mut upstream_request,
                    body,
                    // The key certifies whichever subject the gate admitted
                    // (see `RevocationGate::key`).
                    self.gate.key().clone(),
                    admission.subject,
                    self.settings.signature_lifetime_secs,
                    self.batcher.as_ref(),
                )
                .await?,
            )
        } else {
            None
        };
        trail.signed = Some(signed.is_some());
        trail.signature = signed;

        // 9. Intent, before anything leaves.
        trail.decision = Some(if trail.would_deny.is_empty() {
            "allow"
        } else {
            "would_deny"
        });
        self.audit
            .record_fields("action.decided", &*trail)
            .written()
            .await;

        // 10. Forward.
        let key = PoolKey {
            host: target.host.clone(),
            port,
        };
        let guard = slot.map(|permit| Box::new(permit) as Box<dyn Send>);
        let (response, dialled) = self
            .upstream
            .send(key, &addrs, upstream_request, guard)
            .await?;
        trail.upstream_addr = dialled;

        // 11. Answer.
        let (mut parts, body) = response.into_parts();
        // hyper decoded the body by Transfer-Encoding; a Content-Length sent
        // beside it is stale and would cut the body short (RFC 9112 §6.3).
        if parts.headers.contains_key(http::header::TRANSFER_ENCODING) {
            parts.headers.remove(CONTENT_LENGTH);
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }

    /// Report mode lets policy denials through (logged), except for
    /// malformed input, which cannot be forwarded faithfully anyway.
    fn reportable(&self, denial: &Denial) -> bool {
        self.policy.mode() == Mode::Report
            && denial.code != kakunin_policy::DenyCode::MalformedTarget
    }

    fn would_deny(&self, trail: &mut Trail<'_>, denial: Denial) {
        tracing::warn!(code = denial.code.as_str(), reason = %denial.message, "would deny (report mode)");
        trail.would_deny.push(WouldDeny {
            code: denial.code.as_str(),
            reason: denial.message,
        });
    }

    fn enforce(
        &self,
        checked: Result<(), Denial>,
        trail: &mut Trail<'_>,
    ) -> Result<(), ProxyError> {
        match checked {
            Ok(()) => Ok(()),
            Err(denial) if self.reportable(&denial) => {
                self.would_deny(trail, denial);
                Ok(())
            }
            Err(denial) => Err(denial.into()),
        }
    }

    fn enforce_limit<T>(
        &self,
        checked: Result<T, ProxyError>,
        trail: &mut Trail<'_>,
    ) -> Result<Option<T>, ProxyError> {
        match checked {
            Ok(value) => Ok(Some(value)),
            Err(err) if self.policy.mode() == Mode::Report => {
                tracing::warn!(code = err.code, reason = %err.message, "would deny (report mode)");
                trail.would_deny.push(WouldDeny {
                    code: err.code,
                    reason: err.message,
                });
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }
}

/// GET, HEAD and OPTIONS: requests that change nothing, so neither an
/// action nor signed unless a rule says so.
pub(crate) fn is_safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// With an absolute-form target the proxy replaces `Host` (RFC 9112
/// §3.2.2), but one that does not parse means the client and the proxy
/// disagree on what the request is: more than one, or one that is not a host, is refused rather
/// than guessed at.
fn check_host_header(headers: &http::HeaderMap) -> Result<(), ProxyError> {
    let mut hosts = headers.get_all(HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::malformed("more than one Host header"));
    }
    if let Some(value) = first {
        let valid = value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<http::uri::Authority>().ok())
            .is_some_and(|a| !a.as_str().contains('@'));
        if !valid {
            return Err(ProxyError::malformed(
                "Host header is not a valid host[:port]",
            ));
        }
    }
    Ok(())
}

/// The host and TLS port of an absolute-form `http://` request target.
/// Port 80 (or none) means the upstream's HTTPS port 443; any other port is
/// kept, with TLS on it.
fn absolute_target(uri: &Uri) -> Result<(String, u16), ProxyError> {
    let Some(authority) = uri.authority() else {
        return Err(ProxyError::malformed(
            "request target must be an absolute http:// URL (set HTTP_PROXY to this proxy); \
             origin-form requests need transparent mode",
        ));
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(ProxyError::malformed(format!(
                "scheme {other:?} is not supported: send http:// URLs; the proxy adds TLS"
            )))
        }
        None => return Err(ProxyError::malformed("request target has no scheme")),
    }
    if authority.as_str().contains('@') {
        return Err(ProxyError::malformed(
            "user information in the request URL is refused (it hides the real host)",
        ));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(ProxyError::malformed("request URL has an empty host"));
    }
    // http::Uri keeps a port that does not fit in 16 bits as text and then
    // reports "no port": read it ourselves so that :99999 is refused rather
    // than silently becoming the default port.
    let port_text = authority
        .as_str()
        .strip_prefix(host)
        .and_then(|rest| rest.strip_prefix(':'));
    let port = match port_text {
        None | Some("") => 443,
        Some(text) => match text.parse::<u16>() {
            Ok(80) => 443,
            Ok(0) | Err(_) => {
                return Err(ProxyError::malformed(format!(
                    "port {text:?} is not a valid destination port"
                )))
            }
            Ok(port) => port,
        },
    };
    Ok((host.to_string(), port))
}

async fn read_body(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let too_large = || {
        ProxyError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds the {limit}-byte limit"),
        )
    };
    if let Some(length) = headers.get(CONTENT_LENGTH) {
        let length: u64 = length
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ProxyError::malformed("Content-Length is not a number"))?;
        if length > limit as u64 {
            return Err(too_large());
        }
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(err) => Err(ProxyError::malformed(format!(
            "request body could not be read: {err}"
        ))),
    }
}

/// The request as the upstream gets it: origin-form `path` (with query),
/// `Host` from the canonical target, and only the headers that may cross.
fn build_upstream_request(
    parts: http::request::Parts,
    path: &str,
    target: &Target,
    port: u16,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, ProxyError> {
    let mut headers = parts.headers;
    headers::strip_hop_by_hop(&mut headers);
    headers::strip_agent_supplied_proof(&mut headers);
    // hyper writes the length of the buffered body itself, and the body is
    // already here: there is nothing for the upstream to say "continue" to.
    headers.remove(CONTENT_LENGTH);
    headers.remove(http::header::EXPECT);
    let host = match (target.ip, port) {
        (Some(std::net::IpAddr::V6(_)), 443) => format!("[{}]", target.host),
        (Some(std::net::IpAddr::V6(_)), p) => format!("[{}]:{p}", target.host),
        (_, 443) => target.host.clone(),
        (_, p) => format!("{}:{p}", target.host),
    };
    let host = HeaderValue::from_str(&host)
        .map_err(|_| ProxyError::malformed("host cannot be written as a Host header"))?;
    headers.insert(HOST, host);
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method;
    *request.uri_mut() = path
        .parse()
        .map_err(|_| ProxyError::malformed("request path cannot be forwarded"))?;
    *request.headers_mut() = headers;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_targets() {
        let ok = |s: &str| absolute_target(&s.parse().unwrap()).unwrap();
        assert_eq!(
            ok("http://api.exchange.com/v1"),
            ("api.exchange.com".into(), 443)
        );
        assert_eq!(
            ok("http://api.exchange.com:80/"),
            ("api.exchange.com".into(), 443)
        );
        assert_eq!(
            ok("http://api.exchange.com:8443/"),
            ("api.exchange.com".into(), 8443)
        );
        assert_eq!(ok("http://[::1]:8443/"), ("[::1]".into(), 8443));
        let bad = |s: &str| absolute_target(&s.parse().unwrap()).unwrap_err().code;
        assert_eq!(bad("/v1/trades"), "malformed_request");
        assert_eq!(bad("https://api.exchange.com/"), "malformed_request");
        assert_eq!(bad("http://user@api.exchange.com/"), "malformed_request");
        assert_eq!(bad("http://api.exchange.com:0/"), "malformed_request");
        assert_eq!(bad("http://api.exchange.com:99999/"), "malformed_request");
    }
}

//! One OCSP round trip for a certificate, and what its verified answer
//! means for the gate.

use std::time::{Duration, Instant};

use base64::Engine as _;
use http::HeaderValue;
use kakunin_authority::CertStatus;

use super::fetch::HttpUrl;
use super::{Halt, Subject};

pub struct Good {
    pub staple: HeaderValue,
    pub fetched: Instant,
    pub next_update: Option<i64>,
}

pub enum Answer {
    Good(Good),
    Revoked(Halt),
    /// The responder verifiably does not know the certificate.
    Unknown(String),
}

pub struct Ask<'a> {
    pub url: &'a HttpUrl,
    pub issuer: &'a [u8],
    pub timeout: Duration,
    pub require_nonce: bool,
    pub now_unix: i64,
}

impl Ask<'_> {
    pub async fn about(&self, subject: &Subject) -> Result<Answer, String> {
        let nonce = random_nonce()?;
        let request = kakunin_authority::ocsp::build_request(
            subject.leaf.as_ref(),
            self.issuer,
            Some(&nonce),
        )
        .map_err(|e| format!("cannot build the OCSP request: {e}"))?;
        let der = self.url.post_ocsp(request, self.timeout).await?;
        let verified = kakunin_authority::ocsp::verify_response(
            &der,
            subject.leaf.as_ref(),
            self.issuer,
            self.now_unix,
            Some(&nonce),
        )
        .map_err(|e| format!("the answer from {} was refused: {e}", self.url.as_str()))?;
        if !verified.nonce_echoed {
            if self.require_nonce {
                return Err(format!(
                    "{} did not echo the request's nonce, so its answer could be an old one \
                     replayed; set revocation.require_nonce = false only for a responder that \
                     pre-signs its answers",
                    self.url.as_str()
                ));
            }
            if verified.next_update.is_none() {
                return Err(format!(
                    "{}'s answer has neither our nonce nor a nextUpdate: its freshness cannot be \
                     established",
                    self.url.as_str()
                ));
            }
        }
        // verify_response tolerates clock skew; the cache does not, so an
        // answer already past its nextUpdate is a failure here rather than a
        // good answer that is never usable.
        if verified.next_update.is_some_and(|n| n <= self.now_unix) {
            return Err(format!(
                "{}'s answer is past its nextUpdate",
                self.url.as_str()
            ));
        }
        match verified.status {
            CertStatus::Good => {
                let staple =
                    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(&der))
                        .map_err(|_| "the OCSP answer cannot be stapled".to_string())?;
                Ok(Answer::Good(Good {
                    staple,
                    fetched: Instant::now(),
                    next_update: verified.next_update,
                }))
            }
            CertStatus::Revoked { revoked_at, reason } => Ok(Answer::Revoked(Halt {
                serial: subject.summary.serial_hex.clone(),
                reason,
                revoked_at,
            })),
            CertStatus::Unknown => Ok(Answer::Unknown(format!(
                "{} answers that serial {} is unknown to it",
                self.url.as_str(),
                subject.summary.serial_hex
            ))),
        }
    }
}

fn random_nonce() -> Result<[u8; 16], String> {
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| "the system random source failed".to_string())?;
    Ok(nonce)
}

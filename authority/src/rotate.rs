//! Rotation: a new certificate for an agent's current one, with the same
//! scope, and the old one revoked as superseded once a grace period ends so
//! that a proxy has time to pick up the new certificate.

use std::time::Duration;

use crate::ca::Authority;
use crate::store::{queries, unix_now, CertRecord};
use crate::{AgentRequest, AuthorityError, Issued, SubjectKey, Validity};

#[derive(Debug, Clone)]
pub struct RotateRequest<'a> {
    pub agent_id: &'a str,
    /// `None` keeps the current certificate's public key (the key lives in
    /// a KMS or HSM and does not change); `Some` certifies another one.
    pub key: Option<SubjectKey>,
    pub validity: Validity,
    /// How long the old certificate stays good; zero revokes it at once.
    pub grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Rotated {
    pub issued: Issued,
    /// The replaced certificate as it was before the rotation.
    pub old: CertRecord,
    /// Unix seconds when the old certificate stops being good.
    pub old_revoked_at: i64,
}

impl Authority {
    /// Rotates `agent_id`'s newest certificate that is neither revoked nor
    /// already past a scheduled revocation. Issuing the new certificate and
    /// scheduling the old one's revocation commit together: two concurrent
    /// rotations cannot both replace the same certificate.
    pub fn rotate(&self, request: &RotateRequest<'_>) -> Result<Rotated, AuthorityError> {
        let now = unix_now();
        let grace = i64::try_from(request.grace.as_secs())
            .ok()
            .and_then(|g| now.checked_add(g))
            .ok_or_else(|| AuthorityError::Invalid {
                what: "grace period",
                reason: format!("{} s is too long", request.grace.as_secs()),
            })?;
        self.store().write(|tx| {
            let old = queries::newest_current(tx, request.agent_id, now)?.ok_or_else(|| {
                AuthorityError::NothingToRotate {
                    agent_id: request.agent_id.to_string(),
                }
            })?;
            let policy = stored_policy(&old)?;
            let key = request
                .key
                .clone()
                .unwrap_or_else(|| SubjectKey::SpkiDer(old.spki_der.clone()));
            let signed = self.sign_agent(&AgentRequest {
                agent_id: request.agent_id,
                policy: &policy,
                key,
                validity: request.validity,
            })?;
            queries::insert(tx, &signed.record)?;
            let revoke_at = queries::schedule_revocation(
                tx,
                &old.serial,
                grace,
                &signed.issued.serial_hex,
                old.agent_id.as_deref(),
            )?;
            // Grace zero: the revocation is due now; write it down now.
            queries::materialize_due(tx, now)?;
            Ok(Rotated {
                issued: signed.issued,
                old,
                old_revoked_at: revoke_at,
            })
        })
    }
}

fn stored_policy(old: &CertRecord) -> Result<kakunin_policy::Policy, AuthorityError> {
    let source = format!("policy of serial {}", old.serial);
    let json = old
        .policy_json
        .as_deref()
        .ok_or_else(|| AuthorityError::Invalid {
            what: "stored policy",
            reason: format!("{source} is missing from the CA database"),
        })?;
    kakunin_policy::Policy::from_json_str(&source, json).map_err(|errors| AuthorityError::Invalid {
        what: "stored policy",
        reason: format!(
            "{errors}; issue a fresh certificate with `kakunin ca issue --policy` instead"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Lifecycle;
    use crate::{CertStatus, InitOptions, RevocationReason};

    const POLICY: &str =
        r#"{"agent_id": "bot", "network_rules": {"allowed_hosts": ["a.example"]}}"#;

    fn issue(ca: &Authority) -> Issued {
        let policy = kakunin_policy::Policy::from_json_str("p.json", POLICY).unwrap();
        ca.issue_agent(&AgentRequest {
            agent_id: "bot",
            policy: &policy,
            key: SubjectKey::Generate,
            validity: Validity::Days(1),
        })
        .unwrap()
    }

    fn rotate(ca: &Authority, grace: u64, key: Option<SubjectKey>) -> Rotated {
        ca.rotate(&RotateRequest {
            agent_id: "bot",
            key,
            validity: Validity::Hours(2),
            grace: Duration::from_secs(grace),
        })
        .unwrap()
    }

    #[test]
    fn rotation_keeps_key_and_scope_and_revokes_after_grace() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::init(dir.path(), &InitOptions::default()).unwrap();
        let first = issue(&ca);
        let rotated = rotate(&ca, 3600, None);
        let store = ca.store();
        let old = store.get(&first.serial_hex).unwrap().unwrap();
        let new = store.get(&rotated.issued.serial_hex).unwrap().unwrap();
        assert_eq!(old.spki_der, new.spki_der);
        assert_eq!(old.policy_json, new.policy_json);
        assert_eq!(old.superseded_by.as_deref(), Some(new.serial.as_str()));
        let now = unix_now();
        assert!(matches!(
            old.lifecycle_at(now),
            Lifecycle::RevokeScheduled { .. }
        ));
        assert_eq!(
            store
                .status_at(&old.serial, rotated.old_revoked_at)
                .unwrap(),
            CertStatus::Revoked {
                revoked_at: rotated.old_revoked_at,
                reason: RevocationReason::Superseded
            }
        );
        // The next rotation replaces the new certificate, not the old one.
        let again = rotate(&ca, 0, Some(SubjectKey::Generate));
        assert_eq!(again.old.serial, new.serial);
        assert!(matches!(
            store.status(&new.serial).unwrap(),
            CertStatus::Revoked { .. }
        ));
        let newest = store.get(&again.issued.serial_hex).unwrap().unwrap();
        assert_ne!(newest.spki_der, new.spki_der);
    }

    #[test]
    fn nothing_to_rotate_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::init(dir.path(), &InitOptions::default()).unwrap();
        let err = ca
            .rotate(&RotateRequest {
                agent_id: "bot",
                key: None,
                validity: Validity::Hours(1),
                grace: Duration::ZERO,
            })
            .unwrap_err();
        assert!(
            matches!(err, AuthorityError::NothingToRotate { .. }),
            "{err}"
        );
        let first = issue(&ca);
        ca.revoke(&first.serial_hex, RevocationReason::KeyCompromise)
            .unwrap();
        assert!(ca
            .rotate(&RotateRequest {
                agent_id: "bot",
                key: None,
                validity: Validity::Hours(1),
                grace: Duration::ZERO,
            })
            .is_err());
    }
}

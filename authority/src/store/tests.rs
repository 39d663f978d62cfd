use std::time::Duration;

use rusqlite::Connection;

use super::*;

const T0: i64 = 1_700_000_000;

fn cert(serial: &str, agent: &str) -> NewCertificate {
    NewCertificate {
        serial: serial.into(),
        kind: CertKind::Agent,
        subject: agent.into(),
        agent_id: Some(agent.into()),
        not_before: T0 - 300,
        not_after: T0 + 86_400,
        issued_at: T0,
        spki_der: vec![1, 2, 3],
        der: vec![4, 5, 6],
        policy_json: Some(format!("{{\"agent_id\":\"{agent}\"}}")),
    }
}

fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("ca.db"), &StoreOptions::default()).unwrap();
    (dir, store)
}

fn quick() -> StoreOptions {
    StoreOptions {
        lock_timeout: Duration::from_millis(100),
    }
}

#[test]
fn issuance_is_recorded_with_an_event() {
    let (_dir, store) = fresh();
    store.insert(&cert("4a01", "bot")).unwrap();
    store.insert(&cert("4a02", "other")).unwrap();
    let record = store.get("4A:01").unwrap().unwrap();
    assert_eq!(record.agent_id.as_deref(), Some("bot"));
    assert_eq!(record.der, vec![4, 5, 6]);
    assert_eq!(
        record.policy_json.as_deref(),
        Some("{\"agent_id\":\"bot\"}")
    );
    assert_eq!(store.status_at("4a01", T0).unwrap(), CertStatus::Good);
    assert_eq!(store.list(None).unwrap().len(), 2);
    assert_eq!(store.list(Some("other")).unwrap()[0].serial, "4a02");
    let events = store.events_after(0, 10).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, EventKind::Issued);
    assert_eq!(events[0].at, T0);
    // The same serial twice is refused by the primary key.
    assert!(store.insert(&cert("4a01", "bot")).is_err());
}

#[test]
fn unknown_serials_are_unknown_or_an_explained_error() {
    let (_dir, store) = fresh();
    assert_eq!(store.status("4a01").unwrap(), CertStatus::Unknown);
    assert_eq!(store.status("not hex").unwrap(), CertStatus::Unknown);
    let err = store
        .revoke("4a01", RevocationReason::KeyCompromise, T0)
        .unwrap_err();
    assert!(matches!(err, AuthorityError::UnknownSerial { .. }), "{err}");
    assert!(err.to_string().contains("ca list"), "{err}");
    let err = store
        .revoke("zz", RevocationReason::KeyCompromise, T0)
        .unwrap_err();
    assert!(err.to_string().contains("not a hexadecimal"), "{err}");
}

#[test]
fn revoking_twice_is_refused_and_changes_nothing() {
    let (_dir, store) = fresh();
    store.insert(&cert("4a01", "bot")).unwrap();
    let revoked = store
        .revoke("4a01", RevocationReason::KeyCompromise, T0 + 10)
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(T0 + 10));
    let err = store
        .revoke("4a01", RevocationReason::Superseded, T0 + 20)
        .unwrap_err();
    assert!(
        matches!(err, AuthorityError::AlreadyRevoked { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("keyCompromise"), "{err}");
    assert_eq!(
        store.status("4a01").unwrap(),
        CertStatus::Revoked {
            revoked_at: T0 + 10,
            reason: RevocationReason::KeyCompromise
        }
    );
    assert_eq!(store.revoked(T0 + 30).unwrap().len(), 1);
    let kinds: Vec<EventKind> = store
        .events_after(0, 10)
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, vec![EventKind::Issued, EventKind::Revoked]);
}

#[test]
fn scheduled_revocations_take_effect_at_their_time() {
    let (_dir, store) = fresh();
    store.insert(&cert("4a01", "bot")).unwrap();
    store.insert(&cert("4a02", "bot")).unwrap();
    let due = T0 + 600;
    store
        .write(|tx| queries::schedule_revocation(tx, "4a01", due, "4a02", Some("bot")))
        .unwrap();
    // A second, later schedule never extends the grace period.
    store
        .write(|tx| queries::schedule_revocation(tx, "4a01", due + 999, "4a02", Some("bot")))
        .unwrap();

    assert_eq!(store.status_at("4a01", due - 1).unwrap(), CertStatus::Good);
    assert!(store.materialize_due(due - 1).unwrap().is_empty());
    assert!(store.revoked(due - 1).unwrap().is_empty());
    let record = store.get("4a01").unwrap().unwrap();
    assert_eq!(
        record.lifecycle_at(due - 1),
        Lifecycle::RevokeScheduled { at: due }
    );

    // Due but not yet written down: status already says revoked.
    let revoked = CertStatus::Revoked {
        revoked_at: due,
        reason: RevocationReason::Superseded,
    };
    assert_eq!(store.status_at("4a01", due).unwrap(), revoked);
    assert_eq!(store.revoked(due).unwrap().len(), 1);

    let done = store.materialize_due(due + 5).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].revoked_at, due);
    assert!(store.materialize_due(due + 10).unwrap().is_empty());
    let record = store.get("4a01").unwrap().unwrap();
    assert_eq!(record.revoked_at, Some(due));
    assert_eq!(record.superseded_by.as_deref(), Some("4a02"));
    assert_eq!(store.status_at("4a02", due).unwrap(), CertStatus::Good);

    let events = store.events_after(2, 10).unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::RevocationScheduled,
            EventKind::RevocationScheduled,
            EventKind::Revoked
        ]
    );
    assert_eq!(events[2].reason, Some(RevocationReason::Superseded));
    assert_eq!(events[2].at, due);
    assert_eq!(events[2].agent_id.as_deref(), Some("bot"));
}

#[test]
fn crl_numbers_only_grow_and_survive_reopening() {
    let (dir, store) = fresh();
    assert_eq!(store.next_crl_number().unwrap(), 1);
    assert_eq!(store.next_crl_number().unwrap(), 2);
    drop(store);
    let store = Store::open(&dir.path().join("ca.db"), &StoreOptions::default()).unwrap();
    assert_eq!(store.next_crl_number().unwrap(), 3);
}

#[test]
fn events_page_after_the_last_seen_id() {
    let (_dir, store) = fresh();
    assert_eq!(store.last_event_id().unwrap(), 0);
    for i in 0..5 {
        store.insert(&cert(&format!("4a0{i}"), "bot")).unwrap();
    }
    let first = store.events_after(0, 2).unwrap();
    assert_eq!(first.len(), 2);
    let rest = store.events_after(first[1].id, 100).unwrap();
    assert_eq!(rest.len(), 3);
    assert!(rest.iter().all(|e| e.id > first[1].id));
    assert_eq!(store.last_event_id().unwrap(), rest[2].id);
    assert!(store.events_after(rest[2].id, 100).unwrap().is_empty());
}

#[test]
fn a_damaged_or_foreign_file_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, AuthorityError::DatabaseCorrupt { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("backup"),
        "{text}"
    );

    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let err = Store::open(&other, &StoreOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not a Kakunin"), "{err}");

    let missing = Store::open(&dir.path().join("nope.db"), &StoreOptions::default()).unwrap_err();
    assert!(
        matches!(missing, AuthorityError::DatabaseMissing { .. }),
        "{missing}"
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let (dir, store) = fresh();
    drop(store);
    let path = dir.path().join("ca.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, AuthorityError::DatabaseTooNew { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn a_held_write_lock_times_out_with_a_clear_error_and_readers_carry_on() {
    let (dir, store) = fresh();
    store.insert(&cert("4a01", "bot")).unwrap();
    drop(store);
    let path = dir.path().join("ca.db");
    let holder = Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let store = Store::open(&path, &quick()).unwrap();
    let err = store.insert(&cert("4a02", "bot")).unwrap_err();
    assert!(
        matches!(err, AuthorityError::DatabaseLocked { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
    let err = store
        .revoke("4a01", RevocationReason::KeyCompromise, T0)
        .unwrap_err();
    assert!(
        matches!(err, AuthorityError::DatabaseLocked { .. }),
        "{err}"
    );
    // WAL: a server reading status is not held up by a writer.
    assert_eq!(store.status("4a01").unwrap(), CertStatus::Good);

    holder.execute_batch("COMMIT").unwrap();
    store.insert(&cert("4a02", "bot")).unwrap();
}

#[test]
fn concurrent_writers_queue_instead_of_failing() {
    let (dir, store) = fresh();
    drop(store);
    let path = dir.path().join("ca.db");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store = Store::open(&path, &StoreOptions::default()).unwrap();
                for i in 0..10 {
                    store.insert(&cert(&format!("4{t}{i:02}"), "bot")).unwrap();
                    store.next_crl_number().unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let store = Store::open(&path, &StoreOptions::default()).unwrap();
    assert_eq!(store.list(None).unwrap().len(), 80);
    assert_eq!(store.next_crl_number().unwrap(), 81);
}

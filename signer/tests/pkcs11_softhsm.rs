//! The PKCS#11 backend against a real SoftHSM2 token, with keys generated
//! inside the token. Fails (does not skip) when SoftHSM2 is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// One helper for this crate and the end-to-end tests.
#[path = "../../integration/tests/common/softhsm.rs"]
mod softhsm;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use der::Decode;
use kakunin_signer::{open_key_with, KeyAlgorithm, KeyBackend, KeyError, KeyOptions, Locality};
use rustls::SignatureScheme;
use softhsm::{softhsm, KeyKind, Token};

fn options() -> KeyOptions {
    KeyOptions {
        // Generous: a loaded CI machine must not turn a wait into a failure.
        deadline: Duration::from_secs(30),
        ..KeyOptions::default()
    }
}

fn open(uri: &str) -> Arc<dyn KeyBackend> {
    open_key_with(uri, &options()).unwrap_or_else(|e| panic!("{uri}: {e}"))
}

fn open_error(uri: &str, options: &KeyOptions) -> KeyError {
    match open_key_with(uri, options) {
        Ok(key) => panic!("{uri} opened: {key:?}"),
        Err(err) => err,
    }
}

/// Verifies a TLS-form signature with ring against the backend's SPKI.
fn verify(key: &dyn KeyBackend, scheme: SignatureScheme, message: &[u8], sig: &[u8]) {
    assert!(
        kakunin_signer::verifies(scheme, key.public_key_spki(), message, sig),
        "{scheme:?} signature from {} does not verify",
        key.describe()
    );
}

/// A token with one key of `kind` labelled "agent", id 0x01 0x02.
fn token_with(kind: KeyKind) -> (Token, Vec<u8>) {
    let token = softhsm().token();
    let public = token.generate(kind, "agent", &[1, 2]);
    (token, public)
}

#[test]
fn each_key_type_signs_every_scheme_it_offers_and_ring_verifies() {
    for (kind, algorithm) in [
        (KeyKind::P256, KeyAlgorithm::EcdsaP256),
        (KeyKind::P384, KeyAlgorithm::EcdsaP384),
        (KeyKind::Rsa2048, KeyAlgorithm::Rsa),
        (KeyKind::Ed25519, KeyAlgorithm::Ed25519),
    ] {
        let (token, public) = token_with(kind);
        // By label, by id, by both: the same key.
        for path in [
            "object=agent",
            "id=%01%02",
            "object=agent;id=%01%02;type=private",
        ] {
            let key = open(&token.uri(path));
            assert_eq!(key.algorithm(), algorithm, "{kind:?}");
            assert_eq!(key.locality(), Locality::Remote);
            assert!(
                key.describe().starts_with("pkcs11:token="),
                "{}",
                key.describe()
            );
            assert!(!key.describe().contains("pin"), "{}", key.describe());
            // The SPKI carries the public key the token generated (the
            // point inside CKA_EC_POINT's OCTET STRING, or the modulus).
            let spki = spki::SubjectPublicKeyInfoRef::from_der(key.public_key_spki()).unwrap();
            let bits = spki.subject_public_key.raw_bytes();
            let wanted = &public[public.len() - 32..];
            assert!(
                bits.windows(wanted.len()).any(|w| w == wanted),
                "{kind:?}: the SPKI does not hold the token's public key"
            );
            for scheme in algorithm.tls_schemes() {
                for message in [&b""[..], b"hello", &[7u8; 10_000]] {
                    let sig = key.sign(*scheme, message).unwrap();
                    verify(key.as_ref(), *scheme, message, &sig);
                }
            }
            let foreign = if algorithm == KeyAlgorithm::EcdsaP256 {
                SignatureScheme::ECDSA_NISTP384_SHA384
            } else {
                SignatureScheme::ECDSA_NISTP256_SHA256
            };
            let err = key.sign(foreign, b"m").unwrap_err();
            assert_eq!(err.kind(), "scheme_unsupported", "{err}");
        }
    }
}

#[test]
fn thirty_two_threads_sign_at_once_and_every_signature_verifies() {
    for kind in [KeyKind::P256, KeyKind::Rsa2048] {
        let (token, _) = token_with(kind);
        let key = open(&token.uri("object=agent"));
        let start = Arc::new(Barrier::new(32));
        let threads: Vec<_> = (0..32)
            .map(|t| {
                let (key, start) = (key.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..10 {
                        let message = format!("thread {t} message {i}");
                        let scheme =
                            key.algorithm().tls_schemes()[i % key.algorithm().tls_schemes().len()];
                        let sig = key.sign(scheme, message.as_bytes()).unwrap();
                        verify(key.as_ref(), scheme, message.as_bytes(), &sig);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
}

#[test]
fn open_errors_name_what_is_wrong() {
    let (token, _) = token_with(KeyKind::P256);
    let open_err = |uri: &str| open_error(uri, &options());

    let err = open_err(&token.uri("object=nothing-here"));
    assert_eq!(err.kind(), "open", "{err}");
    let text = err.to_string();
    assert!(text.contains("no private key matches"), "{text}");
    assert!(
        text.contains("object=agent;id=%01%02"),
        "lists what is there: {text}"
    );

    let err = open_err(
        &token
            .uri("object=agent")
            .replace(&format!("token={}", token.label), "token=no-such-token"),
    );
    let text = err.to_string();
    assert!(
        text.contains("no token matches") && text.contains(&token.label),
        "{text}"
    );

    // Two private keys answer to one label.
    token.generate(KeyKind::P256, "agent", &[9]);
    let err = open_err(&token.uri("object=agent"));
    assert!(err.to_string().contains("2 private keys match"), "{err}");
    // The id still tells them apart.
    assert!(open_key_with(&token.uri("object=agent;id=%09"), &options()).is_ok());

    // A URI that names no token, with more than one in the module.
    let err = open_err(&format!(
        "pkcs11:object=agent?module-path={}&pin-source=file:{}",
        softhsm::MODULE,
        token.pin_file.display()
    ));
    assert!(err.to_string().contains("tokens match"), "{err}");

    let missing = softhsm().dir().join("absent.pin");
    let err = open_err(&token.uri("object=agent").replace(
        &token.pin_file.display().to_string(),
        &missing.display().to_string(),
    ));
    assert_eq!(err.kind(), "open");
    assert!(
        err.to_string().contains("cannot read the PIN file"),
        "{err}"
    );

    let empty = softhsm().dir().join("empty.pin");
    std::fs::write(&empty, "\n").unwrap();
    let err = open_err(&token.uri("object=agent").replace(
        &token.pin_file.display().to_string(),
        &empty.display().to_string(),
    ));
    assert!(err.to_string().contains("is empty"), "{err}");

    let err = open_err(
        &token
            .uri("object=agent")
            .replace(softhsm::MODULE, "/nonexistent/libp11.so"),
    );
    assert_eq!(err.kind(), "open");
    assert!(
        err.to_string().contains("cannot load PKCS#11 module"),
        "{err}"
    );

    let err = open_err(&format!(
        "{}&pin-value=x",
        token.uri("object=agent;colour=red")
    ));
    assert_eq!(err.kind(), "unsupported");
    assert!(err.to_string().contains("colour"), "{err}");
}

#[test]
fn a_wrong_pin_is_refused_at_open() {
    // A token of its own: PKCS#11 login is per application, so a token this
    // process is already logged in to would not check the PIN again.
    let (token, _) = token_with(KeyKind::P256);
    std::fs::write(&token.pin_file, "not-the-pin\n").unwrap();
    let err = open_error(&token.uri("object=agent"), &options());
    assert_eq!(err.kind(), "open", "{err}");
    assert!(err.to_string().contains("wrong PIN"), "{err}");
    let err = open_error(
        &token.uri("object=agent").replace(
            &format!("pin-source=file:{}", token.pin_file.display()),
            "pin-value=also-wrong",
        ),
        &options(),
    );
    assert!(err.to_string().contains("wrong PIN"), "{err}");
    assert!(
        !err.to_string().contains("also-wrong"),
        "the PIN leaked: {err}"
    );
}

#[test]
fn a_deadline_shorter_than_the_wait_for_a_session_times_out() {
    let (token, _) = token_with(KeyKind::Rsa2048);
    // One session, and no time to wait for it: whoever finds it busy times
    // out at once; whoever gets it signs.
    let options = KeyOptions {
        deadline: Duration::ZERO,
        pkcs11_sessions: 1,
        ..KeyOptions::default()
    };
    let key = open_key_with(&token.uri("object=agent"), &options).unwrap();
    let mut timeouts = 0;
    for _round in 0..50 {
        let start = Arc::new(Barrier::new(16));
        let results: Vec<Result<(), KeyError>> = (0..16)
            .map(|_| {
                let (key, start) = (key.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let scheme = SignatureScheme::RSA_PSS_SHA256;
                    key.sign(scheme, b"m")
                        .map(|sig| verify(key.as_ref(), scheme, b"m", &sig))
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        for result in results {
            if let Err(err) = result {
                assert_eq!(err.kind(), "timeout", "{err}");
                assert!(err.to_string().contains("did not sign within"), "{err}");
                timeouts += 1;
            }
        }
        if timeouts > 0 {
            break;
        }
    }
    assert!(timeouts > 0, "16 threads on one session never had to wait");
}

#[test]
fn past_max_pending_signatures_are_turned_away_as_busy() {
    let (token, _) = token_with(KeyKind::Rsa2048);
    let options = KeyOptions {
        max_pending: 1,
        pkcs11_sessions: 1,
        ..options()
    };
    let key = open_key_with(&token.uri("object=agent"), &options).unwrap();
    let mut busy = 0;
    for _round in 0..50 {
        let start = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (key, start) = (key.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    key.sign(SignatureScheme::RSA_PSS_SHA256, b"m")
                })
            })
            .collect();
        for thread in threads {
            if let Err(err) = thread.join().unwrap() {
                assert_eq!(err.kind(), "busy", "{err}");
                busy += 1;
            }
        }
        if busy > 0 {
            break;
        }
    }
    assert!(
        busy > 0,
        "16 threads against a limit of 1 were never turned away"
    );
}

#[test]
fn sessions_logged_out_under_the_key_are_replaced_and_logged_in_again() {
    let (token, _) = token_with(KeyKind::P256);
    let key = open(&token.uri("object=agent"));
    let scheme = SignatureScheme::ECDSA_NISTP256_SHA256;
    for round in 0..3 {
        // Every session the key holds loses its login at once.
        token.log_everyone_out();
        for i in 0..8 {
            let message = format!("round {round} signature {i}");
            let sig = key
                .sign(scheme, message.as_bytes())
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            verify(key.as_ref(), scheme, message.as_bytes(), &sig);
        }
    }
}

#[test]
fn a_p11_kit_module_name_and_an_unbounded_deadline_work() {
    let (token, _) = token_with(KeyKind::P256);
    // Debian's softhsm2-common installs p11-kit's softhsm2.module.
    let uri = token.uri("object=agent").replace(
        &format!("module-path={}", softhsm::MODULE),
        "module-name=softhsm2",
    );
    let options = KeyOptions {
        deadline: Duration::MAX,
        ..KeyOptions::default()
    };
    let key = open_key_with(&uri, &options).unwrap_or_else(|e| panic!("{uri}: {e}"));
    let sig = key
        .sign(SignatureScheme::ECDSA_NISTP256_SHA256, b"m")
        .unwrap();
    verify(
        key.as_ref(),
        SignatureScheme::ECDSA_NISTP256_SHA256,
        b"m",
        &sig,
    );
}

#[test]
fn the_private_key_never_leaves_the_token() {
    let (token, _) = token_with(KeyKind::P384);
    let key = open(&token.uri("object=agent"));
    // Opening reads only public attributes; the key is still there, once.
    assert_eq!(token.private_keys(), 1);
    assert!(!format!("{key:?}").contains(softhsm::USER_PIN));
}

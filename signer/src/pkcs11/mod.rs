//! PKCS#11 key backend: the private key stays in the token (an HSM, a smart
//! card, SoftHSM2); we ask the token to sign through a pool of sessions.
//!
//! Opening checks everything once, so a bad reference fails at start: the
//! module loads, exactly one token and one private key match the RFC 7512
//! URI, the PIN is accepted, the public key is read and built into a
//! SubjectPublicKeyInfo, and a test signature verifies against it.

mod encoding;
mod errors;
mod mechanism;
mod pin;
mod pool;
mod token;
mod uri;

use std::fmt;
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::MechanismType;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rustls::SignatureScheme;

use crate::backend::{KeyAlgorithm, KeyBackend, KeyError, Locality};
use crate::options::{Admission, KeyOptions};
use errors::Fault;
use pool::{Pool, Unavailable};
use uri::Pkcs11Uri;

/// A private key on a PKCS#11 token.
pub(crate) struct Pkcs11Key {
    name: String,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    context: Pkcs11,
    slot: Slot,
    uri: Pkcs11Uri,
    /// Kept to log in again when the token forgot the login (every session
    /// closed, token reinserted). The PIN is a secret, but not the key.
    pin: AuthPin,
    offered: Vec<MechanismType>,
    pool: Pool<Handle>,
    admission: Admission,
    deadline: Duration,
    max_attempts: u32,
}

/// A session and the key's handle as that session sees it.
struct Handle {
    session: Session,
    key: ObjectHandle,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("key", &self.name)
            .field("algorithm", &self.algorithm)
            .field("slot", &self.slot.id())
            .finish_non_exhaustive()
    }
}

/// A message signed at start to prove that the token's private key and the
/// public key we read belong together.
const SELF_TEST: &[u8] = b"kakunin pkcs11 key check";

impl Pkcs11Key {
    pub(crate) fn open(reference: &str, options: &KeyOptions) -> Result<Self, KeyError> {
        let uri = Pkcs11Uri::parse(reference).map_err(|reason| KeyError::Unsupported {
            reference: uri::redact(reference),
            reason,
        })?;
        let name = uri.describe();
        let open_error = |reason: String| KeyError::Open {
            key: name.clone(),
            reason,
        };
        let pin = pin::read(uri.pin.as_ref()).map_err(open_error)?;
        let module = uri
            .module
            .as_ref()
            .ok_or_else(|| open_error("no module".into()))?;
        let context = token::load(module).map_err(open_error)?;
        let slot = token::find_token(&context, &uri).map_err(open_error)?;
        let offered = mechanism::offered(&context, slot);

        let session = context
            .open_ro_session(slot)
            .map_err(|e| open_error(format!("cannot open a session: {e}")))?;
        token::login(&session, &pin).map_err(|e| open_error(token::login_error(&e)))?;
        let key = token::find_private_key(&session, &uri).map_err(open_error)?;
        let (algorithm, spki) = token::read_public_key(&session, key, &uri).map_err(open_error)?;

        let size = options.pkcs11_sessions.max(1);
        let mut handles = vec![Handle { session, key }];
        for _ in 1..size {
            // Logged in already: login state belongs to the application.
            let session = context.open_ro_session(slot).map_err(|e| {
                open_error(format!(
                    "cannot open {size} sessions (pkcs11_sessions): {e}"
                ))
            })?;
            handles.push(Handle { session, key });
        }
        let backend = Pkcs11Key {
            name,
            algorithm,
            spki,
            context,
            slot,
            uri,
            pin,
            offered,
            pool: Pool::new(handles, size),
            admission: Admission::new(options.max_pending),
            deadline: options.deadline,
            max_attempts: options.max_attempts.max(1),
        };
        backend.self_test()?;
        Ok(backend)
    }

    fn self_test(&self) -> Result<(), KeyError> {
        let scheme = self.algorithm.tls_schemes()[0];
        let signature = self.sign(scheme, SELF_TEST).map_err(|e| KeyError::Open {
            key: self.name.clone(),
            reason: format!("the test signature failed: {e}"),
        })?;
        if !crate::verifies(scheme, &self.spki, SELF_TEST, &signature) {
            return Err(KeyError::Open {
                key: self.name.clone(),
                reason: "the public key read from the token does not verify the private key's \
                         signature: the public key object belongs to another key"
                    .into(),
            });
        }
        Ok(())
    }

    /// A fresh session for an empty pool place: log in again if the token
    /// forgot us, and look the key up again (handles may not survive).
    fn open_handle(&self) -> Result<Handle, KeyError> {
        let session = self
            .context
            .open_ro_session(self.slot)
            .map_err(|e| self.failure(&e, "cannot open a session"))?;
        token::login(&session, &self.pin).map_err(|e| match errors::fault(&e) {
            Fault::Refused => KeyError::Refused {
                key: self.describe(),
                reason: token::login_error(&e),
            },
            _ => self.failure(&e, "cannot log in again"),
        })?;
        let key =
            token::find_private_key(&session, &self.uri).map_err(|reason| KeyError::Refused {
                key: self.describe(),
                reason,
            })?;
        Ok(Handle { session, key })
    }

    /// A device-level failure: unreachable if the token is gone, else a
    /// signing failure.
    fn failure(&self, err: &cryptoki::error::Error, doing: &str) -> KeyError {
        let reason = format!("{doing}: {err}");
        if errors::device_gone(err) {
            KeyError::Unreachable {
                key: self.describe(),
                reason,
            }
        } else {
            KeyError::Sign {
                key: self.describe(),
                reason,
            }
        }
    }
}

impl KeyBackend for Pkcs11Key {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    fn locality(&self) -> Locality {
        Locality::Remote
    }

    /// Deadline: waiting for a session and retries stop at
    /// `KeyOptions::deadline`; a call already inside the token cannot be
    /// interrupted (PKCS#11 has no cancel) and its answer is used.
    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        if !self.algorithm.tls_schemes().contains(&scheme) {
            return Err(KeyError::SchemeUnsupported {
                key: self.describe(),
                scheme,
            });
        }
        let _admitted = self.admission.enter(&self.name)?;
        // A configured deadline too large for Instant means "no deadline".
        let deadline = Instant::now()
            .checked_add(self.deadline)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
        let request = mechanism::request(scheme, message, &self.offered).map_err(|reason| {
            KeyError::Refused {
                key: self.describe(),
                reason,
            }
        })?;
        let mut borrowed = match self.pool.borrow(deadline, || self.open_handle()) {
            Ok(borrowed) => borrowed,
            Err(Unavailable::TimedOut) => {
                return Err(KeyError::Timeout {
                    key: self.describe(),
                    after: self.deadline,
                })
            }
            Err(Unavailable::Open(err)) => return Err(err),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(handle) = borrowed.get() else {
                return Err(KeyError::Sign {
                    key: self.describe(),
                    reason: "internal error: an empty session place was lent".into(),
                });
            };
            let err = match handle
                .session
                .sign(&request.mechanism, handle.key, &request.data)
            {
                Ok(signature) if request.ecdsa_to_der => {
                    return encoding::ecdsa_raw_to_der(&signature).map_err(|reason| {
                        KeyError::Sign {
                            key: self.describe(),
                            reason,
                        }
                    })
                }
                Ok(signature) => return Ok(signature),
                Err(err) => err,
            };
            match errors::fault(&err) {
                Fault::Refused => {
                    return Err(KeyError::Refused {
                        key: self.describe(),
                        reason: format!("the token refused {scheme:?}: {err}"),
                    })
                }
                Fault::Other => return Err(self.failure(&err, "the token failed to sign")),
                Fault::Session if attempt >= self.max_attempts || Instant::now() >= deadline => {
                    borrowed.discard();
                    return Err(self.failure(
                        &err,
                        &format!("the token failed to sign ({attempt} attempts)"),
                    ));
                }
                // This session is no good (closed, logged out, device
                // reset): the retry runs on a new one in its place.
                Fault::Session => borrowed.refill(|| self.open_handle())?,
            }
        }
    }
}

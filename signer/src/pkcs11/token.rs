//! Finding things on a PKCS#11 module: the module itself, the token, the
//! private key and its public half. Errors are plain sentences; the caller
//! turns them into `KeyError::Open` with the key's name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::encoding;
use super::uri::{percent_encode, Module, Pkcs11Uri};
use crate::backend::KeyAlgorithm;

/// Where p11-kit keeps its `NAME.module` files, which `module-name` uses.
const P11_KIT_MODULE_DIRS: [&str; 2] = ["/etc/pkcs11/modules", "/usr/share/p11-kit/modules"];
/// Smaller RSA keys are refused: ring (and so the TLS peers we test with)
/// does not verify them, and they are too weak for an identity.
const MIN_RSA_BITS: usize = 2048;

/// C_Initialize may run once per module per process, and C_Finalize would
/// pull the module from under every other key: one context per module,
/// kept for the life of the process.
fn contexts() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    CONTEXTS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Loads and initialises the module (once per process).
pub(crate) fn load(module: &Module) -> Result<Pkcs11, String> {
    let path = module_path(module)?;
    let canonical = std::fs::canonicalize(&path).map_err(|e| {
        format!(
            "cannot load PKCS#11 module {}: {e} (is its package installed? SoftHSM2: apt-get install softhsm2)",
            path.display()
        )
    })?;
    let mut loaded = contexts().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(context) = loaded.get(&canonical) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(&canonical)
        .map_err(|e| format!("cannot load PKCS#11 module {}: {e}", path.display()))?;
    // OS locking: the pool's sessions are used from many threads at once.
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in this process (another library) initialised it.
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(format!(
                "PKCS#11 module {} failed to initialise: {e}",
                path.display()
            ))
        }
    }
    loaded.insert(canonical, context.clone());
    Ok(context)
}

fn module_path(module: &Module) -> Result<PathBuf, String> {
    let name = match module {
        Module::Path(path) => return Ok(path.clone()),
        Module::Name(name) => name,
    };
    for dir in P11_KIT_MODULE_DIRS {
        let config = Path::new(dir).join(format!("{name}.module"));
        let Ok(text) = std::fs::read_to_string(&config) else {
            continue;
        };
        let line = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("module:"))
            .map(str::trim)
            .next();
        return match line {
            Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
            Some(path) => Err(format!(
                "{} names the module {path:?}, not an absolute path; give module-path instead",
                config.display()
            )),
            None => Err(format!("{} has no \"module:\" line", config.display())),
        };
    }
    Err(format!(
        "module-name {name:?}: no {name}.module in {}; give module-path instead",
        P11_KIT_MODULE_DIRS.join(" or ")
    ))
}

/// Listings of the module's tokens before the key is refused.
const LISTING_ATTEMPTS: u32 = 3;
/// Between them: long enough for another process to finish rewriting a
/// token, short enough not to matter at start-up.
const LISTING_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The one initialised token the URI's token attributes match.
///
/// A module may fail a listing while another process changes one of its
/// tokens: SoftHSM's file store answers `CKR_GENERAL_ERROR` to
/// `C_GetTokenInfo` while a token's files are being rewritten, and a
/// network HSM may drop a call. Every token must be read for the match to
/// be known unique, so a failed listing is tried again, whole, a few times,
/// and then refuses the key (never a match over the tokens that answered).
pub(crate) fn find_token(context: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, String> {
    let tokens = with_retries(LISTING_ATTEMPTS, LISTING_PAUSE, || list_tokens(context))?;
    choose_token(tokens, uri)
}

/// `attempt` until it succeeds or has failed `attempts` times (its last
/// error then), pausing between tries.
fn with_retries<T>(
    attempts: u32,
    pause: std::time::Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let mut tried = 1;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(err) if tried >= attempts => return Err(format!("{err} ({tried} attempts)")),
            Err(_) => {
                tried += 1;
                std::thread::sleep(pause);
            }
        }
    }
}

/// Every initialised token with its description: each token read once
/// (cryptoki's `get_slots_with_initialized_token` would read every token
/// to filter, and this would then read each again).
fn list_tokens(context: &Pkcs11) -> Result<Vec<(Slot, cryptoki::slot::TokenInfo)>, String> {
    let slots = context
        .get_slots_with_token()
        .map_err(|e| format!("cannot list the module's tokens: {e}"))?;
    let mut tokens = Vec::with_capacity(slots.len());
    for slot in slots {
        let info = context
            .get_token_info(slot)
            .map_err(|e| format!("cannot read the token in slot {}: {e}", slot.id()))?;
        if info.token_initialized() {
            tokens.push((slot, info));
        }
    }
    Ok(tokens)
}

fn choose_token(
    tokens: Vec<(Slot, cryptoki::slot::TokenInfo)>,
    uri: &Pkcs11Uri,
) -> Result<Slot, String> {
    let mut matching = Vec::new();
    let mut seen = Vec::new();
    for (slot, info) in tokens {
        let fits =
            |wanted: &Option<String>, have: &str| wanted.as_deref().is_none_or(|w| w == have);
        let shown = format!(
            "token={:?} serial={:?} slot-id={}",
            info.label(),
            info.serial_number(),
            slot.id()
        );
        if fits(&uri.token, info.label())
            && fits(&uri.serial, info.serial_number())
            && fits(&uri.manufacturer, info.manufacturer_id())
            && fits(&uri.model, info.model())
            && uri.slot_id.is_none_or(|id| id == slot.id())
        {
            matching.push((slot, shown));
        } else {
            seen.push(shown);
        }
    }
    match matching.len() {
        1 => Ok(matching.remove(0).0),
        0 if seen.is_empty() => Err("the module has no initialised token".into()),
        0 => Err(format!(
            "no token matches; the module has: {}",
            seen.join(", ")
        )),
        _ => Err(format!(
            "{} tokens match, name one (token=, serial= or slot-id=): {}",
            matching.len(),
            matching
                .into_iter()
                .map(|(_, s)| s)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Logs the user in, unless the application already is (PKCS#11 login
/// state is shared by all of an application's sessions on a token).
pub(crate) fn login(session: &Session, pin: &AuthPin) -> Result<(), Error> {
    let state = session.get_session_info()?.session_state();
    if matches!(state, SessionState::RoUser | SessionState::RwUser) {
        return Ok(());
    }
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Says what went wrong with a login in words an operator acts on.
pub(crate) fn login_error(err: &Error) -> String {
    match err {
        Error::Pkcs11(RvError::PinIncorrect, _) => {
            "the token refused the PIN (wrong PIN); check pin-source".into()
        }
        Error::Pkcs11(RvError::PinLocked, _) => {
            "the token's user PIN is locked (too many wrong PINs); the SO must unlock it".into()
        }
        Error::Pkcs11(RvError::PinLenRange | RvError::PinInvalid, _) => {
            "the PIN has a length or characters the token does not accept; check pin-source".into()
        }
        Error::Pkcs11(RvError::UserPinNotInitialized, _) => {
            "the token's user PIN was never set (softhsm2-util --init-token ... --pin)".into()
        }
        other => format!("login failed: {other}"),
    }
}

/// What the URI says about the key object, as a search template.
pub(crate) fn key_template(uri: &Pkcs11Uri, class: ObjectClass) -> Vec<Attribute> {
    let mut template = vec![Attribute::Class(class)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    template
}

/// The one private key the URI names.
pub(crate) fn find_private_key(session: &Session, uri: &Pkcs11Uri) -> Result<ObjectHandle, String> {
    let found = session
        .find_objects(&key_template(uri, ObjectClass::PRIVATE_KEY))
        .map_err(|e| format!("cannot search the token: {e}"))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => {
            let all = session
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                .unwrap_or_default();
            let names: Vec<String> = all.iter().map(|h| object_name(session, *h)).collect();
            Err(if names.is_empty() {
                "no private key matches; the token holds no private key visible to the user".into()
            } else {
                format!(
                    "no private key matches; the token's private keys: {}",
                    names.join(", ")
                )
            })
        }
        many => Err(format!(
            "{} private keys match ({}); name one with object= and id=",
            many.len(),
            many.iter()
                .map(|h| object_name(session, *h))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `object=LABEL;id=%XX` of an object, for listing what is there.
fn object_name(session: &Session, handle: ObjectHandle) -> String {
    let attributes = session
        .get_attributes(handle, &[AttributeType::Label, AttributeType::Id])
        .unwrap_or_default();
    let mut parts = Vec::new();
    for attribute in attributes {
        match attribute {
            Attribute::Label(label) => {
                parts.push(format!("object={}", percent_encode(&label, false)))
            }
            Attribute::Id(id) if !id.is_empty() => {
                parts.push(format!("id={}", percent_encode(&id, true)))
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        "(no label, no id)".into()
    } else {
        parts.join(";")
    }
}

/// The key's algorithm (from its own attributes, never from a certificate)
/// and its public key as DER SubjectPublicKeyInfo.
pub(crate) fn read_public_key(
    session: &Session,
    private: ObjectHandle,
    uri: &Pkcs11Uri,
) -> Result<(KeyAlgorithm, Vec<u8>), String> {
    let attrs = session
        .get_attributes(
            private,
            &[
                AttributeType::KeyType,
                AttributeType::Sign,
                AttributeType::Id,
                AttributeType::EcParams,
            ],
        )
        .map_err(|e| format!("cannot read the private key's attributes: {e}"))?;
    let (mut key_type, mut can_sign, mut id, mut params) = (None, false, Vec::new(), None);
    for attribute in attrs {
        match attribute {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::Sign(s) => can_sign = s,
            Attribute::Id(i) => id = i,
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    if !can_sign {
        return Err("the private key does not allow signing (CKA_SIGN is false)".into());
    }
    let key_type = key_type.ok_or("the private key has no CKA_KEY_TYPE")?;
    let algorithm = if key_type == KeyType::RSA {
        KeyAlgorithm::Rsa
    } else if key_type == KeyType::EC || key_type == KeyType::EC_EDWARDS {
        let params = params.ok_or("the EC private key has no CKA_EC_PARAMS")?;
        let algorithm = encoding::curve_from_ec_params(&params)?;
        if (key_type == KeyType::EC_EDWARDS) != (algorithm == KeyAlgorithm::Ed25519) {
            return Err(format!(
                "key type {key_type} does not go with the curve in CKA_EC_PARAMS"
            ));
        }
        algorithm
    } else {
        return Err(format!(
            "key type {key_type} is not supported (EC P-256, P-384, Ed25519 or RSA)"
        ));
    };
    let public = find_public_key(session, uri, &id)?;
    let spki = match (algorithm, public) {
        (KeyAlgorithm::Rsa, public) => {
            // A private RSA key carries its modulus and public exponent, so
            // it stands in when there is no public key object.
            let (modulus, exponent) = rsa_numbers(session, public.unwrap_or(private))?;
            let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "the RSA key has about {bits} bits; at least {MIN_RSA_BITS} are needed"
                ));
            }
            encoding::rsa_spki(&modulus, &exponent)?
        }
        (_, Some(public)) => {
            let point = session
                .get_attributes(public, &[AttributeType::EcPoint])
                .map_err(|e| format!("cannot read the public key's CKA_EC_POINT: {e}"))?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                })
                .ok_or("the public key object has no CKA_EC_POINT")?;
            encoding::ec_spki(algorithm, &encoding::ec_point(algorithm, &point)?)?
        }
        (_, None) => public_key_info(session, private).ok_or(
            "no public key object with the private key's CKA_ID (or label) is on the token, \
             and the private key has no CKA_PUBLIC_KEY_INFO: store the public key beside it",
        )?,
    };
    Ok((algorithm, spki))
}

/// The public key object paired with the private key: by CKA_ID (how
/// PKCS#11 pairs keys), else by the URI's label; `None` when there is none.
fn find_public_key(
    session: &Session,
    uri: &Pkcs11Uri,
    id: &[u8],
) -> Result<Option<ObjectHandle>, String> {
    let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
    if !id.is_empty() {
        template.push(Attribute::Id(id.to_vec()));
    } else if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    } else {
        return Ok(None);
    }
    let found = session
        .find_objects(&template)
        .map_err(|e| format!("cannot search the token for the public key: {e}"))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(format!(
            "{} public key objects pair with the private key (same CKA_ID); keep one",
            many.len()
        )),
    }
}

fn rsa_numbers(session: &Session, object: ObjectHandle) -> Result<(Vec<u8>, Vec<u8>), String> {
    let attrs = session
        .get_attributes(
            object,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .map_err(|e| format!("cannot read the RSA public key: {e}"))?;
    let (mut modulus, mut exponent) = (None, None);
    for attribute in attrs {
        match attribute {
            Attribute::Modulus(m) => modulus = Some(m),
            Attribute::PublicExponent(e) => exponent = Some(e),
            _ => {}
        }
    }
    match (modulus, exponent) {
        (Some(m), Some(e)) if !m.is_empty() && !e.is_empty() => Ok((m, e)),
        _ => Err("the RSA key has no CKA_MODULUS or CKA_PUBLIC_EXPONENT".into()),
    }
}

/// PKCS#11 3.0 tokens may keep the SubjectPublicKeyInfo on the private key.
fn public_key_info(session: &Session, private: ObjectHandle) -> Option<Vec<u8>> {
    session
        .get_attributes(private, &[AttributeType::PublicKeyInfo])
        .ok()?
        .into_iter()
        .find_map(|a| match a {
            Attribute::PublicKeyInfo(spki) if !spki.is_empty() => Some(spki),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::with_retries;

    #[test]
    fn a_listing_that_fails_then_answers_is_used() {
        let mut calls = 0;
        let answer = with_retries(3, Duration::ZERO, || {
            calls += 1;
            if calls < 3 {
                Err("CKR_GENERAL_ERROR".to_string())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(answer, Ok(3));
    }

    #[test]
    fn a_listing_that_keeps_failing_refuses_with_its_last_error() {
        let mut calls = 0;
        let answer: Result<(), String> = with_retries(3, Duration::ZERO, || {
            calls += 1;
            Err(format!("failure {calls}"))
        });
        assert_eq!(answer, Err("failure 3 (3 attempts)".to_string()));
        assert_eq!(calls, 3);
    }
}

//! What a PKCS#11 failure means for the next try, and the check that a
//! signature verifies (ring) used once at start.

use cryptoki::error::{Error, RvError};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls::SignatureScheme;
use spki::SubjectPublicKeyInfoRef;

use der::Decode;

/// How to go on after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The session (or its login, or the device under it) is broken: drop
    /// it, open another, try again.
    Session,
    /// The token will not do this, however often asked.
    Refused,
    /// Something else; the session itself is fine.
    Other,
}

pub(crate) fn fault(err: &Error) -> Fault {
    use RvError as R;
    let Error::Pkcs11(rv, _) = err else {
        return Fault::Other;
    };
    match rv {
        R::SessionHandleInvalid
        | R::SessionClosed
        | R::UserNotLoggedIn
        | R::KeyHandleInvalid
        | R::ObjectHandleInvalid
        | R::OperationActive
        | R::OperationNotInitialized
        | R::DeviceError
        | R::DeviceMemory
        | R::DeviceRemoved
        | R::TokenNotPresent
        | R::TokenNotRecognized
        | R::GeneralError
        | R::FunctionFailed => Fault::Session,
        R::KeyFunctionNotPermitted
        | R::KeyTypeInconsistent
        | R::KeySizeRange
        | R::MechanismInvalid
        | R::MechanismParamInvalid
        | R::FunctionNotSupported
        | R::FunctionRejected
        | R::ActionProhibited
        | R::PinIncorrect
        | R::PinLocked
        | R::PinExpired
        | R::UserPinNotInitialized => Fault::Refused,
        _ => Fault::Other,
    }
}

/// The token (or the whole module) is not there to ask.
pub(crate) fn device_gone(err: &Error) -> bool {
    matches!(
        err,
        Error::Pkcs11(
            RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized
                | RvError::SlotIdInvalid,
            _
        )
    )
}

/// Whether `signature` (as TLS carries it) over `message` verifies with the
/// SubjectPublicKeyInfo `spki`.
pub(crate) fn verifies(
    scheme: SignatureScheme,
    spki: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    use SignatureScheme as S;
    let algorithm: &dyn VerificationAlgorithm = match scheme {
        S::ECDSA_NISTP256_SHA256 => &signature::ECDSA_P256_SHA256_ASN1,
        S::ECDSA_NISTP384_SHA384 => &signature::ECDSA_P384_SHA384_ASN1,
        S::ED25519 => &signature::ED25519,
        S::RSA_PSS_SHA256 => &signature::RSA_PSS_2048_8192_SHA256,
        S::RSA_PSS_SHA384 => &signature::RSA_PSS_2048_8192_SHA384,
        S::RSA_PSS_SHA512 => &signature::RSA_PSS_2048_8192_SHA512,
        S::RSA_PKCS1_SHA256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        S::RSA_PKCS1_SHA384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        S::RSA_PKCS1_SHA512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        _ => return false,
    };
    let Ok(info) = SubjectPublicKeyInfoRef::from_der(spki) else {
        return false;
    };
    let Some(key) = info.subject_public_key.as_bytes() else {
        return false;
    };
    UnparsedPublicKey::new(algorithm, key)
        .verify(message, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;

    use super::*;
    use crate::{FileKey, KeyBackend};

    #[test]
    fn broken_sessions_are_retried_and_refusals_are_not() {
        let e = |rv| Error::Pkcs11(rv, Function::Sign);
        assert_eq!(fault(&e(RvError::SessionHandleInvalid)), Fault::Session);
        assert_eq!(fault(&e(RvError::UserNotLoggedIn)), Fault::Session);
        assert_eq!(fault(&e(RvError::DeviceRemoved)), Fault::Session);
        assert_eq!(fault(&e(RvError::KeyFunctionNotPermitted)), Fault::Refused);
        assert_eq!(fault(&e(RvError::MechanismInvalid)), Fault::Refused);
        assert_eq!(fault(&e(RvError::DataLenRange)), Fault::Other);
        assert_eq!(fault(&Error::NotSupported), Fault::Other);
        assert!(device_gone(&e(RvError::TokenNotPresent)));
        assert!(!device_gone(&e(RvError::SessionClosed)));
    }

    #[test]
    fn verifies_tls_signatures_and_nothing_else() {
        let key = FileKey::from_pem(
            "rsa",
            include_bytes!("../../tests/fixtures/rsa2048-pkcs1.pem"),
        )
        .unwrap();
        for scheme in KeyBackend::algorithm(&key).tls_schemes() {
            let sig = key.sign(*scheme, b"m").unwrap();
            assert!(verifies(*scheme, key.public_key_spki(), b"m", &sig));
            assert!(!verifies(*scheme, key.public_key_spki(), b"n", &sig));
        }
        let sig = key.sign(SignatureScheme::RSA_PSS_SHA256, b"m").unwrap();
        assert!(!verifies(
            SignatureScheme::ED448,
            key.public_key_spki(),
            b"m",
            &sig
        ));
        assert!(!verifies(
            SignatureScheme::RSA_PSS_SHA256,
            b"junk",
            b"m",
            &sig
        ));
    }
}

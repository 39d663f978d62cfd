//! What a PKCS#11 failure means for the next try.

use cryptoki::error::{Error, RvError};
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

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;

    use super::*;

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
}

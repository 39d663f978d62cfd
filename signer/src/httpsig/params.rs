//! Signature parameters (RFC 9421 §2.3) and the `@signature-params` line.

use sfv::{InnerList, KeyRef, ListSerializer, StringRef};

use super::component::Component;
use super::error::{malformed, HttpSigError};

/// The parameters this crate reads. Others that a signer added stay in the
/// serialized line (and so in the signature base) but are not interpreted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureParams {
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub nonce: Option<String>,
    pub keyid: Option<String>,
    pub alg: Option<String>,
    pub tag: Option<String>,
}

/// Covered components and parameters, with the exact `@signature-params`
/// value that the signature base ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureInput {
    pub covered: Vec<Component>,
    pub params: SignatureParams,
    /// The inner list as serialized (RFC 8941 §4.1, canonical form).
    pub line: String,
}

impl SignatureInput {
    /// For a signer: serializes `covered` and `params` in the order
    /// created, expires, nonce, keyid, alg, tag.
    pub fn new(covered: Vec<Component>, params: SignatureParams) -> Result<Self, HttpSigError> {
        let bad = |what: &str| malformed("signature-input", format!("{what} cannot be serialized"));
        let mut list = ListSerializer::new();
        {
            let mut inner = list.inner_list();
            for component in &covered {
                let name = StringRef::from_str(component.name()).map_err(|_| bad("component"))?;
                let _no_parameters = inner.bare_item(name);
            }
            let mut ser = inner.finish();
            if let Some(created) = params.created {
                let v = sfv::Integer::try_from(created).map_err(|_| bad("created"))?;
                ser = ser.parameter(KeyRef::constant("created"), v);
            }
            if let Some(expires) = params.expires {
                let v = sfv::Integer::try_from(expires).map_err(|_| bad("expires"))?;
                ser = ser.parameter(KeyRef::constant("expires"), v);
            }
            for (key, value) in [
                ("nonce", &params.nonce),
                ("keyid", &params.keyid),
                ("alg", &params.alg),
                ("tag", &params.tag),
            ] {
                if let Some(value) = value {
                    let v = StringRef::from_str(value).map_err(|_| bad(key))?;
                    ser = ser.parameter(KeyRef::constant(key), v);
                }
            }
        }
        let line = list.finish().ok_or_else(|| bad("the list"))?;
        Ok(SignatureInput {
            covered,
            params,
            line,
        })
    }

    /// For a verifier: reads one `Signature-Input` member. The line is the
    /// canonical re-serialization, which is what the signer signed when it
    /// serialized per RFC 8941 (every conforming signer does).
    pub fn from_inner_list(list: &InnerList) -> Result<Self, HttpSigError> {
        let mut covered = Vec::with_capacity(list.items.len());
        for item in &list.items {
            let name = item.bare_item.as_string().ok_or_else(|| {
                malformed("signature-input", "a component identifier is not a string")
            })?;
            if !item.params.is_empty() {
                return Err(HttpSigError::UnsupportedComponent(format!(
                    "{} with parameters",
                    name.as_str()
                )));
            }
            let component = Component::parse(name.as_str())?;
            if covered.contains(&component) {
                return Err(HttpSigError::DuplicateComponent(name.as_str().to_string()));
            }
            covered.push(component);
        }
        let mut params = SignatureParams::default();
        for (key, value) in &list.params {
            let integer = || {
                value.as_integer().map(i64::from).ok_or_else(|| {
                    malformed(
                        "signature-input",
                        format!("{} is not an integer", key.as_str()),
                    )
                })
            };
            let string = || {
                value
                    .as_string()
                    .map(|s| s.as_str().to_string())
                    .ok_or_else(|| {
                        malformed(
                            "signature-input",
                            format!("{} is not a string", key.as_str()),
                        )
                    })
            };
            match key.as_str() {
                "created" => params.created = Some(integer()?),
                "expires" => params.expires = Some(integer()?),
                "nonce" => params.nonce = Some(string()?),
                "keyid" => params.keyid = Some(string()?),
                "alg" => params.alg = Some(string()?),
                "tag" => params.tag = Some(string()?),
                _ => {}
            }
        }
        let mut ser = ListSerializer::new();
        ser.members(std::iter::once(&sfv::ListEntry::InnerList(list.clone())));
        let line = ser
            .finish()
            .ok_or_else(|| malformed("signature-input", "empty"))?;
        Ok(SignatureInput {
            covered,
            params,
            line,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_in_rfc_form() {
        let input = SignatureInput::new(
            vec![Component::Method, Component::Field("content-digest".into())],
            SignatureParams {
                created: Some(1618884473),
                expires: Some(1618884533),
                nonce: Some("n\"1".into()),
                keyid: Some("0a1b".into()),
                alg: Some("ecdsa-p256-sha256".into()),
                tag: Some("kakunin".into()),
            },
        )
        .unwrap();
        assert_eq!(
            input.line,
            r#"("@method" "content-digest");created=1618884473;expires=1618884533;nonce="n\"1";keyid="0a1b";alg="ecdsa-p256-sha256";tag="kakunin""#
        );
    }

    #[test]
    fn refuses_values_a_structured_field_cannot_carry() {
        let params = SignatureParams {
            nonce: Some("line\nbreak".into()),
            ..Default::default()
        };
        assert!(SignatureInput::new(vec![Component::Method], params).is_err());
    }
}

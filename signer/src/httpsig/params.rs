//! Signature parameters (RFC 9421 §2.3) and the `@signature-params` line.

use sfv::{InnerList, ListSerializer};

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
        let mut line = String::with_capacity(256);
        write_inner_list(&mut line, &covered, &ParamsRef::of(&params))?;
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

/// The parameters a signer writes, borrowed: a request is signed without
/// copying its nonce or key id into a [`SignatureParams`] first.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParamsRef<'a> {
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub nonce: Option<&'a str>,
    pub keyid: Option<&'a str>,
    pub alg: Option<&'a str>,
    pub tag: Option<&'a str>,
}

impl<'a> ParamsRef<'a> {
    pub fn of(params: &'a SignatureParams) -> ParamsRef<'a> {
        ParamsRef {
            created: params.created,
            expires: params.expires,
            nonce: params.nonce.as_deref(),
            keyid: params.keyid.as_deref(),
            alg: params.alg.as_deref(),
            tag: params.tag.as_deref(),
        }
    }
}

/// Appends `covered` and `params` to `out` as one RFC 8941 inner list with
/// parameters, in canonical form (§4.1): what `@signature-params` is and
/// what `Signature-Input` carries after the label. Written directly rather
/// than through a structured-field serializer, which costs more than the
/// rest of a signature base; `tests::matches_the_sfv_serializer` holds the
/// two to the same bytes. A value a structured field cannot carry is an
/// error, and `out` may then hold part of the list (callers drop it).
pub fn write_inner_list(
    out: &mut String,
    covered: &[Component],
    params: &ParamsRef<'_>,
) -> Result<(), HttpSigError> {
    let bad = |what: &str| malformed("signature-input", format!("{what} cannot be serialized"));
    out.push('(');
    for (i, component) in covered.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_sf_string(out, component.name()).map_err(|()| bad("component"))?;
    }
    out.push(')');
    for (key, value) in [("created", params.created), ("expires", params.expires)] {
        if let Some(value) = value {
            if !(-MAX_SF_INTEGER..=MAX_SF_INTEGER).contains(&value) {
                return Err(bad(key));
            }
            write_key(out, key);
            out.push_str(itoa::Buffer::new().format(value));
        }
    }
    for (key, value) in [
        ("nonce", params.nonce),
        ("keyid", params.keyid),
        ("alg", params.alg),
        ("tag", params.tag),
    ] {
        if let Some(value) = value {
            write_key(out, key);
            write_sf_string(out, value).map_err(|()| bad(key))?;
        }
    }
    Ok(())
}

/// A parameter's `;key=` (the key is one of ours: a valid RFC 8941 key).
fn write_key(out: &mut String, key: &str) {
    out.push(';');
    out.push_str(key);
    out.push('=');
}

/// RFC 8941 §3.3.1: an integer has at most 15 digits.
const MAX_SF_INTEGER: i64 = 999_999_999_999_999;

/// RFC 8941 §4.1.6: a string is printable ASCII, quoted, with `"` and `\`
/// escaped; anything else (a control character, non-ASCII) cannot be one.
fn write_sf_string(out: &mut String, value: &str) -> Result<(), ()> {
    // One look at every byte, without an early exit, so that it runs over
    // whole vectors: printable, and free of anything to escape.
    let (printable, plain) = value.bytes().fold((true, true), |(printable, plain), b| {
        (
            printable & (b' '..=b'~').contains(&b),
            plain & (b != b'"') & (b != b'\\'),
        )
    });
    if !printable {
        return Err(());
    }
    out.reserve(value.len() + 2);
    out.push('"');
    if plain {
        // The common case (a nonce, a key id): copied whole.
        out.push_str(value);
    } else {
        for c in value.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
    Ok(())
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

    /// The structured-field serializer the direct writer replaced: what
    /// RFC 8941 says the line is.
    fn sfv_line(covered: &[Component], params: &ParamsRef<'_>) -> Option<String> {
        use sfv::{KeyRef, StringRef};
        let mut list = ListSerializer::new();
        {
            let mut inner = list.inner_list();
            for component in covered {
                let _ = inner.bare_item(StringRef::from_str(component.name()).ok()?);
            }
            let mut ser = inner.finish();
            for (key, value) in [("created", params.created), ("expires", params.expires)] {
                if let Some(value) = value {
                    let value = sfv::Integer::try_from(value).ok()?;
                    ser = ser.parameter(KeyRef::constant(key), value);
                }
            }
            for (key, value) in [
                ("nonce", params.nonce),
                ("keyid", params.keyid),
                ("alg", params.alg),
                ("tag", params.tag),
            ] {
                if let Some(value) = value {
                    ser = ser.parameter(KeyRef::constant(key), StringRef::from_str(value).ok()?);
                }
            }
        }
        list.finish()
    }

    #[test]
    fn matches_the_sfv_serializer() {
        let printable: String = (0x20u8..=0x7e).map(char::from).collect();
        let strings = [
            "",
            "kakunin",
            "n\"1",
            "back\\slash\\",
            "\"",
            printable.as_str(),
            "tab\there",
            "line\nbreak",
            "cr\r",
            "nul\0",
            "del\x7f",
            "caf\u{e9}",
            "\u{1F600}",
            "trailing space ",
        ];
        let integers = [
            0,
            1,
            -1,
            1_618_884_473,
            MAX_SF_INTEGER,
            -MAX_SF_INTEGER,
            MAX_SF_INTEGER + 1,
            -MAX_SF_INTEGER - 1,
            i64::MAX,
            i64::MIN,
        ];
        let base = ParamsRef {
            created: Some(1_618_884_473),
            expires: Some(1_618_884_533),
            nonce: Some("bm9uY2U"),
            keyid: Some("0a1b"),
            alg: Some("ecdsa-p256-sha256"),
            tag: Some("kakunin"),
        };
        let mut cases = vec![base, ParamsRef::default()];
        for value in integers {
            cases.push(ParamsRef {
                created: Some(value),
                ..base
            });
            cases.push(ParamsRef {
                expires: Some(value),
                ..base
            });
        }
        for value in strings {
            cases.push(ParamsRef {
                nonce: Some(value),
                ..base
            });
            cases.push(ParamsRef {
                keyid: Some(value),
                ..base
            });
            cases.push(ParamsRef {
                alg: Some(value),
                ..base
            });
            cases.push(ParamsRef {
                tag: Some(value),
                ..base
            });
        }
        let component_lists = [
            vec![],
            kakunin_components_for_test(),
            vec![Component::Field("x-weird_!#$%&'*+-.^`|~0".into())],
        ];
        for covered in &component_lists {
            for params in &cases {
                let mut line = String::new();
                let direct = write_inner_list(&mut line, covered, params).map(|()| line);
                assert_eq!(
                    direct.ok(),
                    sfv_line(covered, params),
                    "{covered:?} {params:?}"
                );
            }
        }
    }

    fn kakunin_components_for_test() -> Vec<Component> {
        crate::httpsig::kakunin_components(true).to_vec()
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

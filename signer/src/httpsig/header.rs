//! Reading `Signature-Input` and `Signature` (RFC 9421 §4), which arrive
//! from anyone: sizes are bounded and every shape other than the one the RFC
//! gives is refused.

use http::HeaderMap;
use sfv::{Dictionary, ListEntry, Parser, Version};

use super::component::required_field;
use super::error::{malformed, HttpSigError};
use super::params::SignatureInput;

/// Larger signature fields are refused before parsing. Generous: a 4096-bit
/// RSA signature is 700 characters of base64.
pub const MAX_FIELD_LEN: usize = 16 * 1024;

/// One signature, taken by label from the two fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSignature {
    pub label: String,
    pub input: SignatureInput,
    pub signature: Vec<u8>,
}

/// Reads the signature labelled `label` from a message's headers.
pub fn parse_signature(headers: &HeaderMap, label: &str) -> Result<ParsedSignature, HttpSigError> {
    let input = required_field(headers, "signature-input")?;
    let signature = required_field(headers, "signature")?;
    parse_signature_fields(&input, &signature, label)
}

/// The same from the two field values (each already joined across lines).
pub fn parse_signature_fields(
    signature_input: &str,
    signature: &str,
    label: &str,
) -> Result<ParsedSignature, HttpSigError> {
    let inputs = dictionary("signature-input", signature_input)?;
    let signatures = dictionary("signature", signature)?;
    let missing = || HttpSigError::LabelMissing(label.to_string());
    let input = match inputs.get(label).ok_or_else(missing)? {
        ListEntry::InnerList(list) => SignatureInput::from_inner_list(list)?,
        ListEntry::Item(_) => {
            return Err(malformed(
                "signature-input",
                format!("{label} is not an inner list"),
            ))
        }
    };
    let signature = match signatures.get(label).ok_or_else(missing)? {
        ListEntry::Item(item) => item
            .bare_item
            .as_byte_sequence()
            .ok_or_else(|| malformed("signature", format!("{label} is not a byte sequence")))?
            .to_vec(),
        ListEntry::InnerList(_) => {
            return Err(malformed(
                "signature",
                format!("{label} is not a byte sequence"),
            ))
        }
    };
    Ok(ParsedSignature {
        label: label.to_string(),
        input,
        signature,
    })
}

/// Parses a dictionary field under RFC 8941 (what RFC 9421 references).
pub fn dictionary(field: &'static str, value: &str) -> Result<Dictionary, HttpSigError> {
    if value.len() > MAX_FIELD_LEN {
        return Err(malformed(
            field,
            format!("longer than {MAX_FIELD_LEN} bytes"),
        ));
    }
    Parser::new(value)
        .with_version(Version::Rfc8941)
        .parse::<Dictionary>()
        .map_err(|e| malformed(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::httpsig::Component;

    #[test]
    fn takes_the_labelled_member_among_others() {
        let parsed = parse_signature_fields(
            r#"other=("@path");created=1, kakunin=("@method" "@authority");created=1618884473;keyid="ab";tag="kakunin""#,
            "other=:AAAA:, kakunin=:AQID:",
            "kakunin",
        )
        .unwrap();
        assert_eq!(parsed.signature, vec![1, 2, 3]);
        assert_eq!(
            parsed.input.covered,
            vec![Component::Method, Component::Authority]
        );
        assert_eq!(parsed.input.params.created, Some(1618884473));
        assert_eq!(parsed.input.params.keyid.as_deref(), Some("ab"));
        assert_eq!(
            parsed.input.line,
            r#"("@method" "@authority");created=1618884473;keyid="ab";tag="kakunin""#
        );
    }

    #[test]
    fn refuses_wrong_shapes() {
        let cases = [
            ("kakunin=(\"@method\")", "other=:AQID:", "signature_missing"),
            (
                "kakunin=\"@method\"",
                "kakunin=:AQID:",
                "signature_malformed",
            ),
            (
                "kakunin=(\"@method\")",
                "kakunin=(:AQID:)",
                "signature_malformed",
            ),
            (
                "kakunin=(\"@method\")",
                "kakunin=\"AQID\"",
                "signature_malformed",
            ),
            ("kakunin=(@method)", "kakunin=:AQID:", "signature_malformed"),
            (
                "kakunin=(\"@method\";req)",
                "kakunin=:AQID:",
                "signature_malformed",
            ),
            (
                "kakunin=(\"@method\" \"@method\")",
                "kakunin=:AQID:",
                "signature_malformed",
            ),
            (
                "kakunin=(\"@method\");created=\"1\"",
                "kakunin=:AQID:",
                "signature_malformed",
            ),
            (
                "kakunin=(\"Host\")",
                "kakunin=:AQID:",
                "signature_malformed",
            ),
            ("kakunin=(", "kakunin=:AQID:", "signature_malformed"),
            (
                "kakunin=(\"@method\")",
                "kakunin=:AQ!D:",
                "signature_malformed",
            ),
        ];
        for (input, signature, code) in cases {
            let err = parse_signature_fields(input, signature, "kakunin").unwrap_err();
            assert_eq!(err.code(), code, "{input} / {signature}: {err}");
        }
        let huge = format!("kakunin=(\"{}\")", "a".repeat(MAX_FIELD_LEN));
        assert!(parse_signature_fields(&huge, "kakunin=:AQID:", "kakunin").is_err());
    }
}

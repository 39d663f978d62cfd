//! The signature base (RFC 9421 §2.5): one line per covered component, then
//! `@signature-params`. Both the signer and the verifier build it here, so
//! the two cannot drift apart.

use std::borrow::Cow;

use super::component::{Component, Message};
use super::error::HttpSigError;
use super::params::SignatureInput;

pub fn signature_base(
    message: &Message<'_>,
    input: &SignatureInput,
) -> Result<String, HttpSigError> {
    signature_base_of(message, &input.covered, &input.line)
}

/// The base for `covered`, ending with `line`, their `@signature-params`
/// value: what a signer that wrote the line itself
/// ([`super::params::write_inner_list`]) signs.
pub fn signature_base_of(
    message: &Message<'_>,
    covered: &[Component],
    line: &str,
) -> Result<String, HttpSigError> {
    // A kakunin request's base is about 400 bytes: one allocation.
    let mut base = String::with_capacity(512);
    for (i, component) in covered.iter().enumerate() {
        if covered.iter().take(i).any(|c| c == component) {
            return Err(HttpSigError::DuplicateComponent(
                component.name().to_string(),
            ));
        }
        base.push('"');
        base.push_str(component.name());
        base.push_str("\": ");
        let start = base.len();
        message.write_value(component, &mut base)?;
        // A line break inside a value would forge a line of its own.
        if base.as_bytes()[start..]
            .iter()
            .any(|&b| b == b'\n' || b == b'\r')
        {
            return Err(HttpSigError::UnsupportedComponent(format!(
                "{} (value holds a line break)",
                component.name()
            )));
        }
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(line);
    Ok(base)
}

/// Components the kakunin profile covers for a request: DESIGN.md's list,
/// `content-type` only when the message has one.
pub fn kakunin_components(has_content_type: bool) -> &'static [Component] {
    if has_content_type {
        &KAKUNIN_COMPONENTS
    } else {
        &KAKUNIN_COMPONENTS[..KAKUNIN_COMPONENTS.len() - 1]
    }
}

/// In signing order; `content-type` last, so that the list without it is a
/// prefix.
static KAKUNIN_COMPONENTS: [Component; 5] = [
    Component::Method,
    Component::TargetUri,
    Component::Authority,
    Component::Field(Cow::Borrowed("content-digest")),
    Component::Field(Cow::Borrowed("content-type")),
];

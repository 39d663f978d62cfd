//! RFC 7512 PKCS#11 URIs, the subset a signing key needs.
//!
//! Strict on purpose: an attribute we do not understand could narrow the
//! match in a way we would silently ignore and so pick the wrong key, so it
//! is refused rather than skipped (fail closed).

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use cryptoki::types::AuthPin;

/// Longer than any reasonable URI; bounds the work done on hostile input.
const MAX_URI_LEN: usize = 8192;
/// `CK_TOKEN_INFO.label` is 32 bytes, so a longer label can never match.
const MAX_TOKEN_LABEL: usize = 32;

const PATH_ATTRIBUTES: &str =
    "token, object, id, slot-id, serial, manufacturer, model, type (only type=private)";
const QUERY_ATTRIBUTES: &str = "module-path, module-name, pin-source, pin-value";

/// Which PKCS#11 module (shared library) to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Module {
    Path(PathBuf),
    /// A p11-kit module name, resolved through its `.module` files.
    Name(String),
}

/// Where the user PIN comes from.
#[derive(Debug, Clone)]
pub(crate) enum PinSource {
    File(PathBuf),
    /// In the URI itself (RFC 7512 allows it); kept out of every message.
    Value(AuthPin),
}

/// A parsed `pkcs11:` URI. `Debug` never shows a PIN (AuthPin redacts).
#[derive(Debug, Clone, Default)]
pub(crate) struct Pkcs11Uri {
    pub token: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub slot_id: Option<u64>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub module: Option<Module>,
    pub pin: Option<PinSource>,
}

impl Pkcs11Uri {
    pub(crate) fn parse(uri: &str) -> Result<Pkcs11Uri, String> {
        if uri.len() > MAX_URI_LEN {
            return Err(format!("longer than {MAX_URI_LEN} bytes"));
        }
        if let Some(bad) = uri.chars().find(|c| c.is_control() || *c == '#') {
            return Err(format!(
                "character {bad:?} is not allowed in a PKCS#11 URI (percent-encode it)"
            ));
        }
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or("a PKCS#11 URI starts with \"pkcs11:\"")?;
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let mut parsed = Pkcs11Uri::default();
        let mut seen: Vec<&str> = Vec::new();
        if !path.is_empty() {
            for attribute in path.split(';') {
                let (name, value) = split_attribute(attribute, &mut seen)?;
                parsed.set_path_attribute(name, value)?;
            }
        }
        if let Some(query) = query {
            for attribute in query.split('&') {
                let (name, value) = split_attribute(attribute, &mut seen)?;
                parsed.set_query_attribute(name, value)?;
            }
        }
        if parsed.module.is_none() {
            return Err(
                "no module: add ?module-path=/path/to/module.so (or module-name=NAME)".into(),
            );
        }
        if parsed.pin.is_none() {
            return Err("no PIN: add pin-source=file:/path/to/pin-file to the query".into());
        }
        Ok(parsed)
    }

    fn set_path_attribute(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "token" => {
                let label = text(name, value)?;
                if label.len() > MAX_TOKEN_LABEL {
                    return Err(format!(
                        "token label {label:?} is longer than {MAX_TOKEN_LABEL} bytes, so no token can have it"
                    ));
                }
                self.token = Some(label);
            }
            "manufacturer" => self.manufacturer = Some(text(name, value)?),
            "model" => self.model = Some(text(name, value)?),
            "serial" => self.serial = Some(text(name, value)?),
            "object" => self.object = Some(text(name, value)?),
            "id" => self.id = Some(percent_decode(name, value)?),
            "slot-id" => {
                let number = text(name, value)?;
                let id = number
                    .parse::<u64>()
                    .map_err(|_| format!("slot-id {number:?} is not a decimal number"))?;
                self.slot_id = Some(id);
            }
            "type" => match text(name, value)?.as_str() {
                "private" => {}
                other @ ("public" | "cert" | "secret-key" | "data") => {
                    return Err(format!(
                    "type={other} names an object that cannot sign; the key must be type=private"
                ))
                }
                other => {
                    return Err(format!(
                        "unknown type {other:?}; the key must be type=private"
                    ))
                }
            },
            "pin-source" | "pin-value" | "module-path" | "module-name" => {
                return Err(format!(
                    "{name} belongs in the query (after '?'), not in the path"
                ))
            }
            other => {
                return Err(format!(
                    "unsupported path attribute {:?} (supported: {PATH_ATTRIBUTES})",
                    shown(other)
                ))
            }
        }
        Ok(())
    }

    fn set_query_attribute(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "module-path" | "module-name" => {
                if self.module.is_some() {
                    return Err("give module-path or module-name, not both".into());
                }
                let value = text(name, value)?;
                no_nul(name, &value)?;
                self.module = Some(if name == "module-path" {
                    if !value.starts_with('/') {
                        return Err(format!("module-path {value:?} must be an absolute path"));
                    }
                    Module::Path(PathBuf::from(value))
                } else {
                    if value.contains('/') || value.starts_with('.') {
                        return Err(format!(
                            "module-name {value:?} is a name, not a path (use module-path for a path)"
                        ));
                    }
                    Module::Name(value)
                });
            }
            "pin-source" | "pin-value" => {
                if self.pin.is_some() {
                    return Err("give pin-source or pin-value, not both".into());
                }
                let value = text(name, value)?;
                no_nul(name, &value)?;
                self.pin = Some(if name == "pin-source" {
                    PinSource::File(pin_file(&value)?)
                } else {
                    PinSource::Value(AuthPin::from(value))
                });
            }
            "token" | "object" | "id" | "slot-id" | "serial" | "manufacturer" | "model"
            | "type" => {
                return Err(format!(
                    "{name} belongs in the path (before '?'), not in the query"
                ))
            }
            other => {
                return Err(format!(
                    "unsupported query attribute {:?} (supported: {QUERY_ATTRIBUTES})",
                    shown(other)
                ))
            }
        }
        Ok(())
    }

    /// The path part in canonical form: names the key in logs and errors,
    /// and never carries the query (where a PIN may be).
    pub(crate) fn describe(&self) -> String {
        let mut out = String::from("pkcs11:");
        let mut parts: Vec<(&str, &[u8])> = Vec::new();
        for (name, value) in [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
            ("object", &self.object),
        ] {
            if let Some(value) = value {
                parts.push((name, value.as_bytes()));
            }
        }
        if let Some(id) = &self.id {
            parts.push(("id", id));
        }
        let slot = self.slot_id.map(|s| s.to_string());
        if let Some(slot) = &slot {
            parts.push(("slot-id", slot.as_bytes()));
        }
        for (i, (name, value)) in parts.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            out.push_str(name);
            out.push('=');
            // The id is binary: always fully encoded, as tools print it.
            out.push_str(&percent_encode(value, *name == "id"));
        }
        out
    }
}

/// A URI as far as it may be shown: the path only, since the query may hold
/// `pin-value`; a `pin-value` misplaced into the path is masked too.
pub(crate) fn redact(uri: &str) -> String {
    let path = uri.split('?').next().unwrap_or_default();
    let (scheme, attributes) = match path.strip_prefix("pkcs11:") {
        Some(rest) => ("pkcs11:", rest),
        None => ("", path),
    };
    let attributes = attributes
        .split(';')
        .map(|attr| {
            if attr.starts_with("pin-value=") {
                "pin-value=(hidden)"
            } else {
                attr
            }
        })
        .collect::<Vec<_>>()
        .join(";");
    format!("{scheme}{attributes}")
}

fn split_attribute<'a>(
    attribute: &'a str,
    seen: &mut Vec<&'a str>,
) -> Result<(&'a str, &'a str), String> {
    let (name, value) = attribute.split_once('=').ok_or_else(|| {
        if attribute.is_empty() {
            "empty attribute (two separators in a row, or one at the end)".to_string()
        } else {
            format!("attribute {:?} has no '=value'", shown(attribute))
        }
    })?;
    if value.is_empty() {
        return Err(format!("attribute {:?} has an empty value", shown(name)));
    }
    if seen.contains(&name) {
        return Err(format!("attribute {:?} is given twice", shown(name)));
    }
    seen.push(name);
    Ok((name, value))
}

/// Attribute names from hostile input are shown cut short.
fn shown(name: &str) -> String {
    name.chars().take(40).collect()
}

fn text(name: &str, value: &str) -> Result<String, String> {
    String::from_utf8(percent_decode(name, value)?)
        .map_err(|_| format!("{name} is not UTF-8 once percent-decoded"))
}

fn no_nul(name: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!("{name} contains a NUL byte"));
    }
    Ok(())
}

/// `file:/p`, `file:///p` or a plain path; other schemes (p11-kit's
/// `|command`, `env:`) are refused: we read a file, nothing else.
fn pin_file(source: &str) -> Result<PathBuf, String> {
    if let Some(rest) = source.strip_prefix("file:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err(format!(
                "pin-source {source:?}: a file: URI needs an absolute path (file:/path)"
            ));
        }
        return Ok(PathBuf::from(path));
    }
    if source.starts_with('|') {
        return Err(
            "pin-source: running a command for the PIN is not supported; give file:/path".into(),
        );
    }
    if let Some((scheme, _)) = source.split_once(':') {
        if !scheme.contains('/') {
            return Err(format!(
                "pin-source scheme {:?} is not supported; give file:/path",
                shown(scheme)
            ));
        }
    }
    Ok(PathBuf::from(source))
}

pub(crate) fn percent_decode(name: &str, value: &str) -> Result<Vec<u8>, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| {
                    u8::from_str_radix(h, 16)
                        .ok()
                        .filter(|_| !h.starts_with('+'))
                })
                .ok_or_else(|| {
                    format!("{name}: '%' must be followed by two hex digits (at byte {i})")
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

/// RFC 3986 unreserved characters stay, everything else is `%XX`.
pub(crate) fn percent_encode(value: &[u8], everything: bool) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value {
        if !everything && (b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Module::Path(path) => write!(f, "{}", path.display()),
            Module::Name(name) => write!(f, "module-name={name}"),
        }
    }
}

#[cfg(test)]
#[path = "uri_tests.rs"]
mod tests;

//! Covered components (RFC 9421 §2) and where their values come from.

use std::borrow::Cow;

use http::HeaderMap;

use super::error::{malformed, HttpSigError};

/// A component a signature covers. Component parameters (`;sf`, `;key`,
/// `;bs`, `;req`, `;name`) are not supported: a signature that uses them is
/// refused rather than checked over something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    Method,
    TargetUri,
    Authority,
    Scheme,
    RequestTarget,
    Path,
    Query,
    Status,
    /// A header field, by its lower-case name: borrowed for the names the
    /// profile covers on every request, owned when read from a message.
    Field(Cow<'static, str>),
}

impl Component {
    /// A component identifier as written in `Signature-Input` (without quotes).
    pub fn parse(name: &str) -> Result<Component, HttpSigError> {
        Ok(match name {
            "@method" => Component::Method,
            "@target-uri" => Component::TargetUri,
            "@authority" => Component::Authority,
            "@scheme" => Component::Scheme,
            "@request-target" => Component::RequestTarget,
            "@path" => Component::Path,
            "@query" => Component::Query,
            "@status" => Component::Status,
            field if is_field_name(field) => Component::Field(Cow::Owned(field.to_string())),
            other => return Err(HttpSigError::UnsupportedComponent(other.to_string())),
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Component::Method => "@method",
            Component::TargetUri => "@target-uri",
            Component::Authority => "@authority",
            Component::Scheme => "@scheme",
            Component::RequestTarget => "@request-target",
            Component::Path => "@path",
            Component::Query => "@query",
            Component::Status => "@status",
            Component::Field(name) => name,
        }
    }
}

/// RFC 9110 token characters, lower case only (RFC 9421 §2.1 requires
/// lower-cased field names in component identifiers).
fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// The request target as the signer and the verifier both see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUri {
    scheme: String,
    authority: String,
    path: String,
    query: Option<String>,
}

impl TargetUri {
    /// `authority` is a Host header value or URI authority; it is lower-cased
    /// and loses the scheme's default port, so that `Host: API.example:443`
    /// and `api.example` sign the same.
    pub fn new(scheme: &str, authority: &str, path_and_query: &str) -> TargetUri {
        let scheme = scheme.to_ascii_lowercase();
        let mut authority = authority.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => Some(":443"),
            "http" => Some(":80"),
            _ => None,
        };
        if let Some(port) = default_port {
            if let Some(stripped) = authority.strip_suffix(port) {
                authority = stripped.to_string();
            }
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query.to_string())),
            None => (path_and_query, None),
        };
        let path = if path.is_empty() { "/" } else { path }.to_string();
        TargetUri {
            scheme,
            authority,
            path,
            query,
        }
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    pub fn request_target(&self) -> String {
        let mut target = String::new();
        self.write_request_target(&mut target);
        target
    }

    fn write_request_target(&self, out: &mut String) {
        out.push_str(&self.path);
        if let Some(query) = &self.query {
            out.push('?');
            out.push_str(query);
        }
    }

    pub fn uri(&self) -> String {
        let mut uri = String::new();
        self.write_uri(&mut uri);
        uri
    }

    fn write_uri(&self, out: &mut String) {
        out.push_str(&self.scheme);
        out.push_str("://");
        out.push_str(&self.authority);
        self.write_request_target(out);
    }
}

/// One HTTP message, as far as a signature can see it.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    Request {
        method: &'a str,
        target: &'a TargetUri,
        headers: &'a HeaderMap,
    },
    Response {
        status: u16,
        headers: &'a HeaderMap,
    },
}

impl Message<'_> {
    /// The component's value as it goes into the signature base.
    pub fn value(&self, component: &Component) -> Result<String, HttpSigError> {
        let mut value = String::new();
        self.write_value(component, &mut value)?;
        Ok(value)
    }

    /// Appends the component's value to `out`: the signature base is built
    /// in one buffer, with no string per component. On an error `out` may
    /// hold part of the value; callers drop it.
    pub fn write_value(&self, component: &Component, out: &mut String) -> Result<(), HttpSigError> {
        let missing = || HttpSigError::ComponentMissing(component.name().to_string());
        match (self, component) {
            (_, Component::Field(name)) => {
                if !write_field_value(self.headers(), name, out)? {
                    return Err(missing());
                }
            }
            (Message::Response { status, .. }, Component::Status) => {
                out.push_str(&status.to_string());
            }
            (Message::Response { .. }, _) | (Message::Request { .. }, Component::Status) => {
                return Err(missing());
            }
            (Message::Request { method, target, .. }, derived) => match derived {
                Component::Method => out.push_str(method),
                Component::TargetUri => target.write_uri(out),
                Component::Authority => out.push_str(&target.authority),
                Component::Scheme => out.push_str(&target.scheme),
                Component::RequestTarget => target.write_request_target(out),
                Component::Path => out.push_str(&target.path),
                Component::Query => {
                    out.push('?');
                    out.push_str(target.query.as_deref().unwrap_or(""));
                }
                Component::Status | Component::Field(_) => return Err(missing()),
            },
        }
        Ok(())
    }

    pub(crate) fn headers(&self) -> &HeaderMap {
        match self {
            Message::Request { headers, .. } | Message::Response { headers, .. } => headers,
        }
    }
}

/// RFC 9421 §2.1: every line of the field, trimmed, joined with ", ".
/// None if the field is absent.
pub fn field_value(headers: &HeaderMap, name: &str) -> Result<Option<String>, HttpSigError> {
    let mut joined = String::new();
    Ok(write_field_value(headers, name, &mut joined)?.then_some(joined))
}

/// [`field_value`] appended to `out`; false (and nothing appended) if the
/// field is absent.
fn write_field_value(
    headers: &HeaderMap,
    name: &str,
    out: &mut String,
) -> Result<bool, HttpSigError> {
    let mut present = false;
    for value in headers.get_all(name) {
        let text = value.to_str().map_err(|_| {
            HttpSigError::UnsupportedComponent(format!("{name} (not visible ASCII)"))
        })?;
        if present {
            out.push_str(", ");
        }
        out.push_str(text.trim_matches([' ', '\t']));
        present = true;
    }
    Ok(present)
}

/// [`field_value`] for a field this crate parses itself, which must be there.
pub(crate) fn required_field(
    headers: &HeaderMap,
    name: &'static str,
) -> Result<String, HttpSigError> {
    field_value(headers, name)
        .map_err(|_| malformed(name, "not visible ASCII"))?
        .ok_or(HttpSigError::MissingHeader(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_uri_normalises_authority_and_splits_query() {
        let t = TargetUri::new("HTTPS", "API.Example.com:443", "/v1/trades?x=1&y");
        assert_eq!(t.uri(), "https://api.example.com/v1/trades?x=1&y");
        assert_eq!(t.authority(), "api.example.com");
        let t = TargetUri::new("https", "example.com:8443", "");
        assert_eq!(t.uri(), "https://example.com:8443/");
        let msg_headers = HeaderMap::new();
        let msg = Message::Request {
            method: "GET",
            target: &t,
            headers: &msg_headers,
        };
        assert_eq!(msg.value(&Component::Query).unwrap(), "?");
        assert_eq!(msg.value(&Component::Path).unwrap(), "/");
    }

    #[test]
    fn field_values_are_trimmed_and_joined() {
        let mut h = HeaderMap::new();
        h.append("x-list", " a ".parse().unwrap());
        h.append("x-list", "b,\tc".parse().unwrap());
        assert_eq!(field_value(&h, "x-list").unwrap().unwrap(), "a, b,\tc");
        assert_eq!(field_value(&h, "x-none").unwrap(), None);
    }

    #[test]
    fn component_names_are_checked() {
        assert_eq!(Component::parse("@method").unwrap(), Component::Method);
        assert_eq!(
            Component::parse("content-type").unwrap(),
            Component::Field("content-type".into())
        );
        for bad in ["Content-Type", "@unknown", "", "a b", "@query-param"] {
            assert!(Component::parse(bad).is_err(), "{bad}");
        }
    }
}

//! An owned JSON value whose numbers keep their exact decimal value, used for request
//! bodies and for the policy's `in` lists.

use std::collections::HashSet;

use jsonc_parser::ast::Value;

use crate::decimal::Decimal;
use crate::spanned::prop_name;

#[derive(Debug, Clone)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(Decimal, String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Converts an AST, refusing duplicate keys: a reader that keeps the other copy would
    /// see a different document than the one that was checked.
    pub fn from_ast(v: &Value<'_>, at: &str) -> Result<Json, String> {
        Ok(match v {
            Value::NullKeyword(_) => Json::Null,
            Value::BooleanLit(b) => Json::Bool(b.value),
            Value::StringLit(s) => Json::Str(s.value.to_string()),
            Value::NumberLit(n) => match Decimal::parse(n.value, true) {
                Some(d) => Json::Num(d, n.value.to_string()),
                None => return Err(format!("{} is not a finite number", n.value)),
            },
            Value::Array(a) => {
                let mut out = Vec::with_capacity(a.elements.len());
                for (i, el) in a.elements.iter().enumerate() {
                    out.push(Json::from_ast(el, &format!("{at}/{i}"))?);
                }
                Json::Arr(out)
            }
            Value::Object(o) => {
                let mut seen = HashSet::with_capacity(o.properties.len());
                let mut out = Vec::with_capacity(o.properties.len());
                for p in &o.properties {
                    let name = prop_name(p);
                    let here = format!("{at}/{}", escape_token(name));
                    if !seen.insert(name) {
                        return Err(format!("duplicate key at {here}"));
                    }
                    out.push((name.to_string(), Json::from_ast(&p.value, &here)?));
                }
                Json::Obj(out)
            }
        })
    }

    /// Structural equality; numbers compare by value (`1` equals `1.0`), strings exactly.
    pub fn same(&self, other: &Json) -> bool {
        match (self, other) {
            (Json::Null, Json::Null) => true,
            (Json::Bool(a), Json::Bool(b)) => a == b,
            (Json::Num(a, _), Json::Num(b, _)) => a == b,
            (Json::Str(a), Json::Str(b)) => a == b,
            (Json::Arr(a), Json::Arr(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
            }
            (Json::Obj(a), Json::Obj(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(k, v)| {
                        b.iter()
                            .find(|(k2, _)| k2 == k)
                            .is_some_and(|(_, v2)| v.same(v2))
                    })
            }
            _ => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Num(..) => "a number",
            Json::Str(_) => "a string",
            Json::Arr(_) => "an array",
            Json::Obj(_) => "an object",
        }
    }

    pub fn pointer(&self, tokens: &[String]) -> Option<&Json> {
        let mut cur = self;
        for t in tokens {
            cur = match cur {
                Json::Obj(props) => props.iter().find(|(k, _)| k == t).map(|(_, v)| v)?,
                Json::Arr(items) => items.get(array_index(t)?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Compact text for messages, cut short so a huge value cannot flood a log line.
    pub fn short(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        if s.chars().count() > 80 {
            s = s.chars().take(77).collect::<String>() + "...";
        }
        s
    }

    fn write(&self, out: &mut String) {
        if out.len() > 200 {
            return;
        }
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(_, text) => out.push_str(text),
            Json::Str(s) => out.push_str(&format!("{s:?}")),
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Obj(props) => {
                out.push('{');
                for (i, (k, v)) in props.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!("{k:?}:"));
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// RFC 6901 array index: `0` or a number without leading zeros (`-` never exists yet).
fn array_index(t: &str) -> Option<usize> {
    if t.is_empty() || (t.len() > 1 && t.starts_with('0')) || !t.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    t.parse().ok()
}

/// Splits an RFC 6901 JSON pointer into unescaped reference tokens.
pub(crate) fn parse_pointer(p: &str) -> Result<Vec<String>, String> {
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!(
            "{p:?} is not a JSON pointer; it must start with '/' (e.g. \"/size\")"
        ));
    };
    rest.split('/')
        .map(|t| {
            let mut out = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(format!(
                            "{p:?}: '~' must be followed by 0 (for '~') or 1 (for '/')"
                        ))
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

fn escape_token(t: &str) -> String {
    t.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(text: &str) -> Result<Json, String> {
        let r = jsonc_parser::parse_to_ast(
            text,
            &Default::default(),
            &crate::spanned::json_options(false),
        )
        .map_err(|e| e.to_string())?;
        match r.value {
            Some(v) => Json::from_ast(&v, ""),
            None => Err("empty".into()),
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(j(r#"{"size":1,"size":900000}"#).is_err());
        assert!(j(r#"{"a":[{"b":1,"b":2}]}"#).is_err());
        assert!(j(r#"{"a":{"b":1},"c":{"b":2}}"#).is_ok());
    }

    #[test]
    fn pointers_follow_rfc6901() {
        let doc = j(r#"{"a/b":{"m~n":[10,20]},"":1}"#).unwrap_or(Json::Null);
        let get = |p: &str| {
            parse_pointer(p)
                .ok()
                .and_then(|t| doc.pointer(&t).map(|v| v.short()))
        };
        assert_eq!(get("/a~1b/m~0n/1"), Some("20".into()));
        assert_eq!(get("/"), Some("1".into()));
        assert_eq!(get("/a~1b/m~0n/01"), None);
        assert_eq!(get("/a~1b/m~0n/-"), None);
        assert_eq!(get("/a~1b/m~0n/2"), None);
        assert_eq!(get("/missing"), None);
        assert!(parse_pointer("size").is_err());
        assert!(parse_pointer("").is_err());
        assert!(parse_pointer("/a~2").is_err());
        assert!(parse_pointer("/a~").is_err());
    }

    #[test]
    fn numbers_compare_by_value_strings_exactly() {
        let a = j("[1, \"x\", {\"k\": 2.0}]").unwrap_or(Json::Null);
        let b = j("[1.0, \"x\", {\"k\": 2}]").unwrap_or(Json::Null);
        assert!(a.same(&b));
        let c = j("[1, \"X\", {\"k\": 2}]").unwrap_or(Json::Null);
        assert!(!a.same(&c));
        let n = j("1").unwrap_or(Json::Null);
        let s = j("\"1\"").unwrap_or(Json::Null);
        assert!(!n.same(&s));
    }
}

//! Body constraints: JSON pointer → `max` / `min` / `in`. The body the upstream will act on
//! must be unambiguous, so anything the checker cannot read with certainty is refused.

use jsonc_parser::ast::Value;
use jsonc_parser::common::Ranged;

use crate::decimal::Decimal;
use crate::error::{Denial, DenyCode};
use crate::jvalue::{parse_pointer, Json};
use crate::spanned::{child, index, kind, Decoder};

#[derive(Debug, Clone)]
pub(crate) struct BodyConstraint {
    pub pointer: String,
    tokens: Vec<String>,
    pub max: Option<(Decimal, String)>,
    pub min: Option<(Decimal, String)>,
    pub one_of: Option<Vec<Json>>,
    one_of_json: Vec<serde_json::Value>,
}

impl BodyConstraint {
    /// The constraint as JSON, for `effective_json`.
    pub fn describe(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let num = |text: &str| {
            text.parse::<serde_json::Number>()
                .map(serde_json::Value::Number)
                .unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
        };
        if let Some((_, t)) = &self.max {
            m.insert("max".into(), num(t));
        }
        if let Some((_, t)) = &self.min {
            m.insert("min".into(), num(t));
        }
        if self.one_of.is_some() {
            m.insert(
                "in".into(),
                serde_json::Value::Array(self.one_of_json.clone()),
            );
        }
        serde_json::Value::Object(m)
    }
}

/// Decodes an action's `body` object; errors go to the decoder.
pub(crate) fn decode(d: &mut Decoder<'_>, v: &Value<'_>, path: &str) -> Vec<BodyConstraint> {
    let Some(fields) = d.object(v, path, &[]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (pointer, value) in fields.iter() {
        let key = child(path, pointer);
        let tokens = match parse_pointer(pointer) {
            Ok(t) => Some(t),
            Err(e) => {
                d.error(value.range(), &key, e);
                None
            }
        };
        if let (Some(c), Some(tokens)) = (decode_one(d, value, &key), tokens) {
            out.push(BodyConstraint {
                pointer: pointer.to_string(),
                tokens,
                ..c
            });
        }
    }
    out
}

fn decode_one(d: &mut Decoder<'_>, v: &Value<'_>, key: &str) -> Option<BodyConstraint> {
    let fields = d.object(v, key, &["max", "min", "in"])?;
    let mut c = BodyConstraint {
        pointer: String::new(),
        tokens: Vec::new(),
        max: None,
        min: None,
        one_of: None,
        one_of_json: Vec::new(),
    };
    let mut ok = true;
    for name in ["max", "min"] {
        let Some(val) = fields.get(name) else {
            continue;
        };
        let k = child(key, name);
        let parsed = match val {
            Value::NumberLit(n) => Decimal::parse(n.value, true).map(|x| (x, n.value.to_string())),
            _ => None,
        };
        match parsed {
            Some(p) if name == "max" => c.max = Some(p),
            Some(p) => c.min = Some(p),
            None => {
                ok = false;
                d.error(
                    val.range(),
                    &k,
                    format!("expected a finite JSON number, found {}", describe(val)),
                );
            }
        }
    }
    if let (Some((max, max_t)), Some((min, min_t))) = (&c.max, &c.min) {
        if min > max {
            ok = false;
            let at = fields.get("min").map_or(fields.range, |v| v.range());
            d.error(
                at,
                &child(key, "min"),
                format!("min {min_t} is greater than max {max_t}; no value could pass"),
            );
        }
    }
    if let Some(val) = fields.get("in") {
        let k = child(key, "in");
        match val {
            Value::Array(a) if a.elements.is_empty() => {
                ok = false;
                d.error(a.range, &k, "expected a non-empty array of allowed values");
            }
            Value::Array(a) => {
                let mut list = Vec::new();
                for (i, el) in a.elements.iter().enumerate() {
                    match Json::from_ast(el, "") {
                        Ok(j) => {
                            list.push(j);
                            c.one_of_json.push(serde_json::Value::from(el.clone()));
                        }
                        Err(e) => {
                            ok = false;
                            d.error(el.range(), &index(&k, i), e);
                        }
                    }
                }
                c.one_of = Some(list);
            }
            other => {
                ok = false;
                d.error(
                    other.range(),
                    &k,
                    format!(
                        "expected a non-empty array of allowed values, found {}",
                        kind(other)
                    ),
                );
            }
        }
    }
    if fields.get("max").is_none() && fields.get("min").is_none() && fields.get("in").is_none() {
        ok = false;
        d.error(
            fields.range,
            key,
            "a body constraint needs at least one of \"max\", \"min\", \"in\"",
        );
    }
    ok.then_some(c)
}

fn describe(v: &Value<'_>) -> String {
    match v {
        Value::NumberLit(n) => format!("{} (not a finite number)", n.value),
        other => kind(other).to_string(),
    }
}

/// Checks a request body against `constraints` (of the rule named `rule`).
pub(crate) fn check(constraints: &[BodyConstraint], rule: &str, body: &[u8]) -> Result<(), Denial> {
    if constraints.is_empty() {
        return Ok(());
    }
    let deny = |m: String| Denial::new(DenyCode::ActionDenied, format!("{m} ({rule})"));
    let text = std::str::from_utf8(body).map_err(|_| {
        deny("the request body is not UTF-8 JSON; this action's body is constrained".into())
    })?;
    let parsed = jsonc_parser::parse_to_ast(
        text,
        &Default::default(),
        &crate::spanned::json_options(false),
    )
    .map_err(|e| {
        deny(format!(
            "the request body is not valid JSON ({e}); this action's body is constrained"
        ))
    })?;
    let Some(root) = parsed.value else {
        return Err(deny(
            "the request body is empty; this action's body is constrained".into(),
        ));
    };
    let doc = Json::from_ast(&root, "").map_err(|e| {
        deny(format!(
            "the request body cannot be checked with certainty: {e}"
        ))
    })?;
    for c in constraints {
        let p = &c.pointer;
        let Some(v) = doc.pointer(&c.tokens) else {
            return Err(deny(format!("{p} is missing from the request body")));
        };
        if c.max.is_some() || c.min.is_some() {
            let n = number(v).ok_or_else(|| {
                deny(format!(
                    "{p} = {} is {}, not a number or a plain decimal string",
                    v.short(),
                    v.kind()
                ))
            })?;
            if let Some((max, t)) = &c.max {
                if n > *max {
                    return Err(deny(format!("{p} = {} exceeds max {t}", v.short())));
                }
            }
            if let Some((min, t)) = &c.min {
                if n < *min {
                    return Err(deny(format!("{p} = {} is below min {t}", v.short())));
                }
            }
        }
        if let Some(list) = &c.one_of {
            if !list.iter().any(|allowed| allowed.same(v)) {
                let shown: Vec<String> = list.iter().map(Json::short).collect();
                return Err(deny(format!(
                    "{p} = {} is not one of [{}]",
                    v.short(),
                    shown.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// JSON numbers, and strings holding a plain decimal (`"45000"`, `"0.5"`): clients often
/// send amounts as strings. Exponents, spaces, `+`, hex etc. in strings are refused.
fn number(v: &Json) -> Option<Decimal> {
    match v {
        Json::Num(d, _) => Some(d.clone()),
        Json::Str(s) => Decimal::parse(s, false),
        _ => None,
    }
}

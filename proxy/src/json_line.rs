//! The members of a one-line JSON object, written straight into the audit
//! log's buffer.
//!
//! Why not serde's derive: serde_json escapes every key and every string
//! byte by byte, and an audit line's keys are constants and nearly all of
//! its values (hex serials, host names, paths) need no escape at all. That
//! loop was about a tenth of an unsigned request's instructions. Here a
//! string that needs no escape is copied as it is, and any other goes
//! through serde_json, so the bytes are the same either way (the trail's
//! tests compare the two).

use std::fmt::Display;

use serde::Serialize;

/// Members appended to an object that is already open; each is preceded by
/// a comma unless it is the object's first.
pub struct Members<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Members<'a> {
    /// Members after others already written (the log's own keys).
    pub fn after_others(out: &'a mut Vec<u8>) -> Members<'a> {
        Members { out, first: false }
    }

    /// A key from the program's own text, written as it is: keys are
    /// plain lower-case names (the trail's test holds them to what serde
    /// writes), and checking each one on every line was most of the work
    /// of a line.
    fn key(&mut self, key: &'static str) {
        debug_assert!(is_plain(key), "{key:?} needs escaping");
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A member whose key is data (a map's), escaped like any string.
    pub fn entry<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        string(self.out, key);
        self.out.push(b':');
        self.value_only(value);
    }

    pub fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        string(self.out, value);
    }

    /// `str` for a value that may be absent: an absent one is left out.
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    /// `u64` for a value that may be absent: an absent one is left out.
    pub fn opt_u64(&mut self, key: &'static str, value: Option<u64>) {
        if let Some(value) = value {
            self.u64(key, value);
        }
    }

    pub fn u64(&mut self, key: &'static str, value: u64) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    pub fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// A value written as a JSON string of its `Display` form (as serde
    /// writes a socket address).
    pub fn display(&mut self, key: &'static str, value: &impl Display) {
        self.key(key);
        string(self.out, &value.to_string());
    }

    /// Any serde value, through serde_json (for the rare and the nested).
    pub fn value<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) {
        self.key(key);
        self.value_only(value);
    }

    fn value_only<T: Serialize + ?Sized>(&mut self, value: &T) {
        let start = self.out.len();
        if serde_json::to_writer(&mut *self.out, value).is_err() {
            // Only a Serialize impl that fails on purpose gets here.
            self.out.truncate(start);
            self.out.extend_from_slice(b"null");
        }
    }

    /// A nested object whose members `fill` writes.
    pub fn object(&mut self, key: &'static str, fill: impl FnOnce(&mut Members<'_>)) {
        self.key(key);
        self.out.push(b'{');
        fill(&mut Members {
            out: self.out,
            first: true,
        });
        self.out.push(b'}');
    }

    /// An array of objects, each filled by `fill`.
    pub fn objects<T>(
        &mut self,
        key: &'static str,
        items: &[T],
        fill: impl Fn(&T, &mut Members<'_>),
    ) {
        self.key(key);
        self.out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.push(b'{');
            fill(
                item,
                &mut Members {
                    out: self.out,
                    first: true,
                },
            );
            self.out.push(b'}');
        }
        self.out.push(b']');
    }
}

/// `value` as a JSON string, byte for byte what serde_json writes: only
/// control characters, `"` and `\` are escaped (RFC 8259 §7).
pub fn string(out: &mut Vec<u8>, value: &str) {
    if is_plain(value) {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, value).is_err() {
        // A str always serializes; keep the line valid regardless.
        out.extend_from_slice(b"\"\"");
    }
}

/// Whether `value` needs no escape in a JSON string.
fn is_plain(value: &str) -> bool {
    // No early exit, so the check runs over whole vectors.
    value.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_what_serde_json_writes() {
        for s in [
            "",
            "plain /v1/trades",
            "quote \" backslash \\ slash /",
            "controls \n\r\t\u{0}\u{1f} del \u{7f}",
            "unicode é 漢 \u{2028} 😀",
        ] {
            let mut ours = Vec::new();
            string(&mut ours, s);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn members_make_one_object() {
        let mut out = b"{\"a\":1".to_vec();
        let mut m = Members::after_others(&mut out);
        m.str("s", "x\"y");
        m.opt_str("absent", None);
        m.opt_u64("absent", None);
        m.opt_u64("some", Some(7));
        m.u64("n", u64::MAX);
        m.bool("b", false);
        m.display("addr", &std::net::SocketAddr::from(([127, 0, 0, 1], 443)));
        m.object("o", |m| {
            m.u64("i", 1);
            m.object("empty", |_| {});
        });
        m.objects("list", &[1u64, 2], |n, m| m.u64("n", *n));
        m.objects("none", &[] as &[u64], |n, m| m.u64("n", *n));
        m.value("v", &serde_json::json!({"k": [null]}));
        m.entry("data \"key\"", &1);
        out.push(b'}');
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "a": 1, "s": "x\"y", "some": 7, "n": u64::MAX, "b": false, "addr": "127.0.0.1:443",
                "o": {"i": 1, "empty": {}}, "list": [{"n": 1}, {"n": 2}], "none": [],
                "v": {"k": [null]}, "data \"key\"": 1
            })
        );
    }
}

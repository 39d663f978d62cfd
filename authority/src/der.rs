//! The little DER the scope extension needs: rcgen writes the extension
//! envelope, we write its value (a UTF8String).

/// DER encoding of an ASN.1 UTF8String (tag 12) holding `text`.
pub fn utf8_string(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 6);
    out.push(0x0c);
    push_length(&mut out, bytes.len());
    out.extend_from_slice(bytes);
    out
}

fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let be = len.to_be_bytes();
    let skip = be.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (be.len() - skip) as u8);
    out.extend_from_slice(&be[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths() {
        assert_eq!(utf8_string("ab"), vec![0x0c, 2, b'a', b'b']);
        let long = "x".repeat(300);
        let der = utf8_string(&long);
        assert_eq!(&der[..4], &[0x0c, 0x82, 0x01, 0x2c]);
        assert_eq!(der.len(), 304);
        assert_eq!(utf8_string(&"y".repeat(128))[..3], [0x0c, 0x81, 0x80]);
    }
}

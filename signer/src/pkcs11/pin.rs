//! Reading the user PIN named by the URI.

use std::io::Read;
use std::path::Path;

use cryptoki::types::AuthPin;

use super::uri::PinSource;

/// More than any PIN; a larger file is the wrong file.
const MAX_PIN_FILE: u64 = 4096;

pub(crate) fn read(source: Option<&PinSource>) -> Result<AuthPin, String> {
    match source {
        Some(PinSource::File(path)) => read_file(path),
        Some(PinSource::Value(pin)) => Ok(pin.clone()),
        None => Err("no PIN: add pin-source=file:/path/to/pin-file to the URI's query".into()),
    }
}

fn read_file(path: &Path) -> Result<AuthPin, String> {
    let shown = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read the PIN file {shown}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_PIN_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the PIN file {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_PIN_FILE {
        return Err(format!(
            "the PIN file {shown} is larger than {MAX_PIN_FILE} bytes: not a PIN file"
        ));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| format!("the PIN file {shown} is not UTF-8 text"))?;
    // Editors and `echo` end the file with a newline that is not the PIN's.
    let pin = text.trim_end_matches(['\n', '\r']);
    if pin.is_empty() {
        return Err(format!("the PIN file {shown} is empty"));
    }
    Ok(AuthPin::from(pin.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_newlines_are_trimmed_and_empty_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            PinSource::File(path)
        };
        for text in [&b"1234\n"[..], b"1234", b"1234\r\n"] {
            assert!(read(Some(&write("pin", text))).is_ok());
        }
        for (text, expected) in [
            (&b""[..], "is empty"),
            (b"\n", "is empty"),
            (&[0xff, 0xfe][..], "not UTF-8"),
            (&[b'1'; 5000][..], "larger than"),
        ] {
            let err = read(Some(&write("bad", text))).err().unwrap();
            assert!(err.contains(expected), "{err}");
        }
        let missing = PinSource::File(dir.path().join("absent"));
        let err = read(Some(&missing)).err().unwrap();
        assert!(
            err.contains("cannot read the PIN file") && err.contains("absent"),
            "{err}"
        );
        assert!(read(None).is_err());
    }
}

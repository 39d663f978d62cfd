//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) and every input a fuzz
//! run kept as a crash (`fuzz/regressions/<target>/`, see scripts/fuzz.sh)
//! through the same checks the fuzz targets run, on the stable toolchain and
//! in the ordinary `cargo test`.

use std::fs;
use std::path::{Path, PathBuf};

use kakunin_signer::httpsig::fuzz_checks;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every regular file under `fuzz/<kind>/<target>/`, dotfiles (`.gitkeep`)
/// aside, in a stable order.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_file())
            .filter(|path| {
                !path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with('.'))
            })
            .collect(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut count = 0;
    for kind in ["corpus", "regressions"] {
        for path in inputs(kind, target) {
            let data = match fs::read(&path) {
                Ok(data) => data,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{} fails {target} (input {:?})",
                path.display(),
                String::from_utf8_lossy(&data)
            );
            count += 1;
        }
    }
    count
}

#[test]
fn signature_headers_corpus_and_regressions() {
    let n = replay("signature_headers", fuzz_checks::signature_headers);
    assert!(n > 0, "no inputs for signature_headers under fuzz/corpus");
}

#[test]
fn structured_field_corpus_and_regressions() {
    let n = replay("structured_field", fuzz_checks::structured_field);
    assert!(n > 0, "no inputs for structured_field under fuzz/corpus");
}

#!/usr/bin/env bash
# Fuzzes the structured-field parser and the signature-header parser
# (fuzz/fuzz_targets, logic in signer/src/httpsig/fuzz_checks.rs) for a
# bounded time per target, then keeps whatever libFuzzer found as a
# regression input that `cargo test` replays (signer/tests/fuzz_regressions.rs).
#
#   FUZZ_SECONDS=30      seconds per target (default 30)
#   FUZZ_TARGETS="a b"   targets to run (default: all in fuzz/fuzz_targets)
#   FUZZ_TOOLCHAIN=...   rustup toolchain (default: nightly if installed,
#                        else stable with RUSTC_BOOTSTRAP=1)
#   CARGO_TARGET_DIR     if set, the fuzz build goes to $CARGO_TARGET_DIR/fuzz
#                        (kept between runs, so only the first run builds)
#
# Installs cargo-fuzz if missing. Needs no input. Exits non-zero if a target
# crashed, timed out or ran out of memory; the inputs are then in
# fuzz/regressions/<target>/, to commit with the fix.
set -euo pipefail
exec </dev/null
cd "$(dirname "$0")/.."
root=$(pwd)

seconds="${FUZZ_SECONDS:-30}"
case "$seconds" in
  '' | *[!0-9]*) echo "FUZZ_SECONDS must be a whole number of seconds, not '$seconds'" >&2; exit 2 ;;
esac

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/fuzz/target}"
mkdir -p "$CARGO_TARGET_DIR"

started=$SECONDS
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
  echo "cargo-fuzz installed in $((SECONDS - started)) s"
fi

# libFuzzer instrumentation needs -Z flags: on a nightly toolchain as it
# is, on stable through RUSTC_BOOTSTRAP=1 (the same compiler, with its
# unstable options unlocked; only for this build, never for releases).
toolchain=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
  toolchain=("+$FUZZ_TOOLCHAIN")
elif command -v rustup >/dev/null 2>&1 && rustup run nightly rustc --version >/dev/null 2>&1; then
  toolchain=(+nightly)
fi
version=$(cargo "${toolchain[@]}" --version)
case "$version" in
  *nightly*) ;;
  *) export RUSTC_BOOTSTRAP=1 ;;
esac
# AddressSanitizer (cargo fuzz's default) works on stable too with
# RUSTC_BOOTSTRAP=1 (checked with Rust 1.95 and cargo-fuzz 0.13: rust-std
# ships the ASan runtime for x86_64 Linux on every channel, and a planted
# heap overflow is reported). Without RUSTC_BOOTSTRAP stable refuses
# -Zsanitizer and only FUZZ_SANITIZER=none builds. The harness is safe Rust
# (unsafe_code is forbidden), so ASan mainly guards the dependencies'
# unsafe code.
sanitizer="${FUZZ_SANITIZER:-address}"
fuzz=(cargo "${toolchain[@]}" fuzz)
echo "toolchain: $version${RUSTC_BOOTSTRAP:+ (RUSTC_BOOTSTRAP=1)}, sanitizer: $sanitizer"

if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do
    t=$(basename "$f" .rs)
    targets+=("$t")
  done
fi

build_started=$SECONDS
# Every target at once; the runs below then find them built.
(cd fuzz && "${fuzz[@]}" build --sanitizer "$sanitizer")
echo "fuzz build: $((SECONDS - build_started)) s"

failed=()
for t in "${targets[@]}"; do
  # New inputs go to a scratch corpus beside the build (kept between runs);
  # fuzz/corpus/<target> holds the committed seeds and is only read.
  scratch="$CARGO_TARGET_DIR/corpus/$t"
  artifacts="$root/fuzz/artifacts/$t"
  kept="$root/fuzz/regressions/$t"
  mkdir -p "$scratch" "$artifacts" "$kept"
  stamp=$(mktemp)
  run_started=$SECONDS
  echo "fuzzing $t for ${seconds} s"
  status=0
  (cd fuzz && "${fuzz[@]}" run --sanitizer "$sanitizer" "$t" "$scratch" "$root/fuzz/corpus/$t" -- \
    -max_len=4096 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) ||
    status=$?
  echo "$t: exit $status after $((SECONDS - run_started)) s"
  found=0
  while IFS= read -r -d '' artifact; do
    cp "$artifact" "$kept/"
    echo "KEPT: $kept/$(basename "$artifact")" >&2
    found=1
  done < <(find "$artifacts" -maxdepth 1 -type f \
    \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) \
    -newer "$stamp" -print0)
  rm -f "$stamp"
  if [ "$found" -eq 1 ] || [ "$status" -ne 0 ]; then
    failed+=("$t")
  fi
done

echo "total: $((SECONDS - started)) s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FUZZING FAILED: ${failed[*]}." >&2
  echo "Inputs that crashed, hung or ran out of memory are in fuzz/regressions/<target>/;" >&2
  echo "reproduce with: cargo test -p kakunin-signer --test fuzz_regressions" >&2
  exit 1
fi
echo "fuzzing found nothing"

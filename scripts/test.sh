#!/usr/bin/env bash
# The one test command (README.md): installs what the tests need, builds, and
# runs every test in the workspace. Safe to run on a fresh Debian machine with
# only the Rust toolchain and Python; needs no input.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v node >/dev/null 2>&1 || need+=(nodejs)
# SoftHSM2: the PKCS#11 token the pkcs11 key backend is tested against.
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
# nginx and HAProxy: the proxies the benchmark's smoke test compares with.
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" ca-certificates
fi

# The interop tests verify our signatures with the PyPI package
# http-message-signatures, installed into a virtualenv (not the system).
KAKUNIN_PYTHON="$(bash scripts/python-env.sh | tail -n1)"
export KAKUNIN_PYTHON

# The end-to-end tests run the real binary: build it first.
cargo build --locked --workspace --bins
# The README's other command, as a newcomer types it (in the dev profile, to
# spare a release build): it must resolve to the kakunin binary and the demo
# must get every answer it expects.
demo_log="$(mktemp)"
if ! cargo run --locked -q -- demo >"$demo_log" 2>&1; then
  cat "$demo_log"; rm -f "$demo_log"
  echo "test.sh: cargo run -- demo failed" >&2
  exit 1
fi
rm -f "$demo_log"
cargo test --locked --workspace

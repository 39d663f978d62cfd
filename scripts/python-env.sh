#!/usr/bin/env bash
# A Python venv holding what the tests run that we did not write: the independent
# RFC 9421 verifier (integration/tests/py/verify_httpsig.py) and moto's server,
# the KMS-compatible service the aws-kms backend is tested against. Idempotent: a venv that already has the
# pinned versions is left alone, so a second run needs no network. All chatter goes
# to stderr; the last (and only) line on stdout is the venv's python.
#   venv: $KAKUNIN_VENV, else $CARGO_TARGET_DIR/py-venv, else ./target/py-venv
set -euo pipefail

venv="${KAKUNIN_VENV:-${CARGO_TARGET_DIR:-$PWD/target}/py-venv}"
# Pinned together: the verifier uses http_sf's parser directly, as the library does.
pins=(http-message-signatures==3.0.0 http-sf==1.5.0 'moto[server]==5.2.5')
py="$venv/bin/python"

have_pins() {
  [ -x "$py" ] && "$py" - "${pins[@]}" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    name = name.split("[")[0]
    if version(name) != want:
        sys.exit(1)
import http_message_signatures, http_sf, cryptography, moto.server  # noqa: E401,F401  (importable, not just listed)
EOF
}

if ! have_pins; then
  command -v python3 >/dev/null 2>&1 || { echo "python-env.sh: python3 is not installed (scripts/test.sh installs it)" >&2; exit 1; }
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "python-env.sh: http-message-signatures 3.0.0 needs Python 3.10 or newer; found $(python3 -V 2>&1)" >&2
    exit 1
  fi
  # Debian ships venv's ensurepip separately, in python3-venv.
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "installing: python3-venv" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -q >&2
    "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends python3-venv >&2
  fi
  if [ ! -x "$py" ]; then
    if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
      echo "python-env.sh: $venv exists and is not a venv; remove it or set KAKUNIN_VENV" >&2
      exit 1
    fi
    echo "creating venv: $venv" >&2
    python3 -m venv --clear "$venv" >&2  # --clear: a venv left half-made by an interrupted run
  fi
  "$py" -m pip install -q --disable-pip-version-check "${pins[@]}" >&2
  have_pins || { echo "python-env.sh: $venv lacks ${pins[*]} after pip install" >&2; exit 1; }
fi

echo "$py"

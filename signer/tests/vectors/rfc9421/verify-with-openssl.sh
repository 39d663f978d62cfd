#!/usr/bin/env bash
# Re-checks every fixture in this directory with OpenSSL's CLI alone (see README.md).
# Needs openssl 3 and python3 (JSON, base64, and raw r||s to DER); prints one line per
# check and exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# <json> <out-base> <out-sig> [der]: the signature base (no trailing newline) and signature bytes.
extract() {
  python3 - "$@" <<'EOF'
import base64, json, sys
d = json.load(open(sys.argv[1]))
label = d["label"]
assert d["signature_input"].startswith(label + "=(")
value = d["signature"]
assert value.startswith(label + "=:") and value.endswith(":")
sig = base64.b64decode(value[len(label) + 2:-1], validate=True)
params = d["signature_base"].split("\n")[-1]
assert params == '"@signature-params": ' + d["signature_input"][len(label) + 1:], "params line != Signature-Input"
open(sys.argv[2], "w").write(d["signature_base"])
if len(sys.argv) > 4:  # ECDSA: RFC 9421 sends r||s; OpenSSL wants DER
    half = len(sig) // 2
    def der_int(b):
        b = b.lstrip(b"\0") or b"\0"
        b = b"\0" + b if b[0] & 0x80 else b
        return b"\x02" + bytes([len(b)]) + b
    body = der_int(sig[:half]) + der_int(sig[half:])
    sig = b"\x30" + bytes([len(body)]) + body
open(sys.argv[3], "wb").write(sig)
print(len(base64.b64decode(value[len(label) + 2:-1])))
EOF
}

for k in rsa-pss ecc-p256 ed25519; do
  openssl pkey -in "test-key-$k.pem" -noout
  openssl pkey -pubin -in "test-key-$k.pub.pem" -noout
  # Compare public halves as text: the RSA-PSS private key is PKCS#8 with the id-RSASSA-PSS
  # OID while its public key is an rsaEncryption SPKI, so the DER differs.
  diff <(openssl pkey -in "test-key-$k.pem" -pubout | openssl pkey -pubin -noout -text | grep -v 'PSS parameter') \
       <(openssl pkey -pubin -in "test-key-$k.pub.pem" -noout -text) >/dev/null
  echo "ok  test-key-$k: private and public parse and match"
done

for m in request response; do
  python3 - "$m.http" <<'EOF'
import base64, hashlib, sys
head, body = open(sys.argv[1], "rb").read().split(b"\n\n", 1)
fields = dict(line.split(b": ", 1) for line in head.split(b"\n")[1:])
assert int(fields[b"Content-Length"]) == len(body), "Content-Length"
want = b"sha-512=:" + base64.b64encode(hashlib.sha512(body).digest()) + b":"
assert fields[b"Content-Digest"] == want, "Content-Digest"
EOF
  echo "ok  $m.http: Content-Length and Content-Digest match the body"
done

for n in 1 2 3; do
  len=$(extract "b_2_$n.json" "$tmp/base" "$tmp/sig")
  [ "$len" = 256 ]
  openssl dgst -sha512 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:64 -sigopt rsa_mgf1_md:sha512 \
    -verify test-key-rsa-pss.pub.pem -signature "$tmp/sig" "$tmp/base" >/dev/null
  echo "ok  B.2.$n rsa-pss-sha512: 256-byte signature verifies"
done

len=$(extract b_2_4.json "$tmp/base" "$tmp/sig" der)
[ "$len" = 64 ]
openssl dgst -sha256 -verify test-key-ecc-p256.pub.pem -signature "$tmp/sig" "$tmp/base" >/dev/null
echo "ok  B.2.4 ecdsa-p256-sha256: 64-byte r||s signature verifies"

len=$(extract b_2_6.json "$tmp/base" "$tmp/sig")
[ "$len" = 64 ]
openssl pkeyutl -verify -rawin -pubin -inkey test-key-ed25519.pub.pem -in "$tmp/base" -sigfile "$tmp/sig" >/dev/null
openssl pkeyutl -sign -rawin -inkey test-key-ed25519.pem -in "$tmp/base" -out "$tmp/resigned"
cmp -s "$tmp/resigned" "$tmp/sig"
echo "ok  B.2.6 ed25519: 64-byte signature verifies, and re-signing reproduces it byte for byte"

# A check that cannot fail proves nothing: one changed byte must break each algorithm.
extract b_2_6.json "$tmp/base" "$tmp/sig" >/dev/null
printf 'x' >>"$tmp/base"
! openssl pkeyutl -verify -rawin -pubin -inkey test-key-ed25519.pub.pem -in "$tmp/base" -sigfile "$tmp/sig" >/dev/null 2>&1
extract b_2_4.json "$tmp/base" "$tmp/sig" der >/dev/null
printf 'x' >>"$tmp/base"
! openssl dgst -sha256 -verify test-key-ecc-p256.pub.pem -signature "$tmp/sig" "$tmp/base" >/dev/null 2>&1
extract b_2_3.json "$tmp/base" "$tmp/sig" >/dev/null
printf 'x' >>"$tmp/base"
! openssl dgst -sha512 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:64 -sigopt rsa_mgf1_md:sha512 \
  -verify test-key-rsa-pss.pub.pem -signature "$tmp/sig" "$tmp/base" >/dev/null 2>&1
echo "ok  a base with one extra byte fails for ed25519, ecdsa-p256-sha256 and rsa-pss-sha512"

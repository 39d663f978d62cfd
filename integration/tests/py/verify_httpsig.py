#!/usr/bin/env python3
"""Verify one captured request's RFC 9421 signature with an independent implementation.

The verifier is the PyPI package `http-message-signatures` (pyauth), not Kakunin's own
code, so a signature it accepts is interoperable, not merely self-consistent.
Run it with the venv made by scripts/python-env.sh:

    "$(bash scripts/python-env.sh | tail -n1)" integration/tests/py/verify_httpsig.py capture.json

Input (JSON file, argv[1]):
    method, url          the request as the upstream saw it (url absolute, encoded)
    headers              [[name, value], ...] in wire order; repeated names allowed
    body_b64             the content bytes, base64 ("" or absent: empty body)
    public_key_pem       the signer's public key (SubjectPublicKeyInfo PEM); any keyid resolves to it
    label                the Signature-Input / Signature dictionary key, e.g. "kakunin"
  optional:
    tag                  signed tag required; default "kakunin"; null selects by label only
                         (labels are not signed, so the library warns; for foreign vectors only)
    require_components   components the signature must cover; default: Kakunin's contract
                         ("@method" "@target-uri" "@authority", "content-digest" when there is
                         a body or a Content-Digest field, "content-type" when that field is present)
    max_age_secs         oldest acceptable `created`, in seconds; default 86400 (the library's
                         default); null disables the age check. `expires` is always enforced:
                         the library reads the clock itself and takes no "now" override.
    status               if given, the message is a response to method+url with this status
    verify_body          default true: the body must match a signed Content-Digest (the library
                         then requires one whenever the body is not empty). false skips that, for
                         foreign vectors that do not sign a digest (RFC 9421 B.2.1, B.2.6).

Output: one JSON line {"verified", "label", "alg", "covered", "params", "error", ...}.
Exit status: 0 verified, 1 not verified, 2 bad input.
"""

import base64
import datetime
import json
import sys
import warnings

import http_sf
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageVerifier,
    HTTPSignatureComponentResolver,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)

# The algorithms of Kakunin's contract; HMAC is excluded because a public key cannot verify it.
ALGORITHMS = {
    "ecdsa-p256-sha256": algorithms.ECDSA_P256_SHA256,
    "ecdsa-p384-sha384": algorithms.ECDSA_P384_SHA384,
    "rsa-pss-sha512": algorithms.RSA_PSS_SHA512,
    "ed25519": algorithms.ED25519,
}


class BadInput(Exception):
    pass


class Headers:
    """Field lines in wire order; the library reads repeated lines through items()."""

    def __init__(self, pairs):
        self._pairs = list(pairs)

    def items(self):
        return list(self._pairs)

    def __iter__(self):
        return iter(dict.fromkeys(name for name, _ in self._pairs))

    def __contains__(self, name):
        return any(n.lower() == name.lower() for n, _ in self._pairs)

    def __setitem__(self, name, value):
        del self[name]
        self._pairs.append((name, value))

    def __delitem__(self, name):
        self._pairs = [(n, v) for n, v in self._pairs if n.lower() != name.lower()]

    def combined(self, name):
        values = [v.strip(" \t") for n, v in self._pairs if n.lower() == name.lower()]
        return ", ".join(values) if values else None


class Request:
    def __init__(self, method, url, headers):
        self.method, self.url, self.headers = method, url, headers


class Response:
    def __init__(self, status_code, headers, request):
        self.status_code, self.headers, self.request = status_code, headers, request


class OneKeyResolver(HTTPSignatureKeyResolver):
    """The capture names the key; keyid (the certificate serial) is reported, not looked up."""

    def __init__(self, key):
        self.key = key

    def resolve_public_key(self, key_id):
        return self.key

    def resolve_private_key(self, key_id):
        raise HTTPMessageSignaturesException("verification only")


class LabelOnlyVerifier(HTTPMessageVerifier):
    allow_label_only_selection = True


def alg_for_key(key):
    """RFC 9421 section 3.3: without `alg`, the algorithm is derived from the key material."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ecdsa-p256-sha256", "secp384r1": "ecdsa-p384-sha384"}.get(key.curve.name)
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa-pss-sha512"
    return None


def load_input(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read {path}: {e}") from e
    if not isinstance(doc, dict):
        raise BadInput("input must be a JSON object")
    for field in ("method", "url", "headers", "public_key_pem", "label"):
        if field not in doc:
            raise BadInput(f'missing field "{field}"')
    checks = {
        "method": lambda v: isinstance(v, str),
        "url": lambda v: isinstance(v, str),
        "label": lambda v: isinstance(v, str),
        "tag": lambda v: v is None or isinstance(v, str),
        "max_age_secs": lambda v: v is None or (type(v) is int and v >= 0),
        "require_components": lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
        "verify_body": lambda v: isinstance(v, bool),
        "public_key_pem": lambda v: isinstance(v, str),
        "body_b64": lambda v: v is None or isinstance(v, str),
        "status": lambda v: v is None or type(v) is int,
    }
    for field, ok in checks.items():
        if field in doc and not ok(doc[field]):
            raise BadInput(f'field "{field}" has the wrong type')
    pairs = doc["headers"]
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    ):
        raise BadInput('"headers" must be a list of [name, value] string pairs')
    try:
        body = base64.b64decode(doc.get("body_b64") or "", validate=True)
    except ValueError as e:
        raise BadInput(f'"body_b64" is not base64: {e}') from e
    try:
        key = load_pem_public_key(doc["public_key_pem"].encode())
    except (ValueError, TypeError) as e:
        raise BadInput(f'"public_key_pem" is not a PEM public key: {e}') from e
    headers = Headers((n, v) for n, v in pairs)
    request = Request(doc["method"], doc["url"], headers)
    message = request
    if doc.get("status") is not None:
        message = Response(doc["status"], headers, Request(doc["method"], doc["url"], Headers([])))
    try:
        HTTPSignatureComponentResolver(message)  # rejects a bad method or URL up front
    except HTTPMessageSignaturesException as e:
        raise BadInput(f"bad request line: {e}") from e
    return doc, message, headers, body, key


def signature_input_member(headers, label):
    """Covered components and parameters as sent (not yet verified), for the report and `alg`."""
    value = headers.combined("Signature-Input")
    if value is None:
        return None, None
    try:
        parsed = http_sf.parse(value.encode(), tltype="dictionary")
    except (ValueError, TypeError, UnicodeEncodeError):
        return None, None
    member = parsed.get(label) if isinstance(parsed, dict) else None
    if not member or not isinstance(member[0], list):
        return None, None
    return [component_name(name, params) for name, params in member[0]], dict(member[1])


def component_name(name, params):
    """A bare name like "@method", or the serialized item when it has parameters."""
    return http_sf.ser((name, params)) if params else name


def jsonable(params):
    return {k: (base64.b64encode(v).decode() if isinstance(v, bytes) else v) for k, v in params.items()}


def main(argv):
    out = {"verified": False, "label": None, "alg": None, "covered": [], "params": {}, "error": None}
    if len(argv) != 2:
        out["error"] = "usage: verify_httpsig.py CAPTURE.json"
        print(json.dumps(out))
        return 2
    try:
        doc, message, headers, body, key = load_input(argv[1])
    except BadInput as e:
        out["error"] = str(e)
        print(json.dumps(out))
        return 2
    label = doc["label"]
    tag = doc.get("tag", "kakunin")
    out["label"] = label
    covered, params = signature_input_member(headers, label)
    if covered is not None:
        out["covered"], out["params"] = covered, jsonable(params)
    try:
        if covered is None:
            raise InvalidSignature(f'no Signature-Input member labelled "{label}"')
        alg = params.get("alg")
        out["alg_source"] = "alg parameter" if alg is not None else "key type"
        alg = alg if alg is not None else alg_for_key(key)
        out["alg"] = alg
        if alg not in ALGORITHMS:
            raise InvalidSignature(f"unsupported algorithm {alg!r}")
        if "require_components" in doc:
            required = doc["require_components"]
        else:
            required = ["@method", "@target-uri", "@authority"]
            if body or "content-digest" in headers:
                required.append("content-digest")
            if "content-type" in headers:
                required.append("content-type")
        max_age = doc.get("max_age_secs", 86400)
        verifier_class = LabelOnlyVerifier if tag is None else HTTPMessageVerifier
        verifier = verifier_class(signature_algorithm=ALGORITHMS[alg], key_resolver=OneKeyResolver(key))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the label-only warning is the caller's explicit choice
            results = verifier.verify(
                message,
                max_age=None if max_age is None else datetime.timedelta(seconds=max_age),
                expect_tag=tag,
                expect_label=label,
                require_components=required,
                body=body if doc.get("verify_body", True) else None,
            )
        (result,) = results  # labels are unique in a Dictionary, so exactly one
        out["verified"] = True
        out["covered"] = [
            component_name(*http_sf.parse(c.encode(), tltype="item"))
            for c in result.covered_components
            if c != '"@signature-params"'
        ]
        out["params"] = jsonable(result.parameters)
        out["content_digest_verified"] = result.body is not None
        out["required"] = list(required)
        out["signature_base"] = "\n".join(f"{k}: {v}" for k, v in result.covered_components.items())
        print(json.dumps(out))
        return 0
    except InvalidSignature as e:
        reason = str(e) or "the signature does not match the signature base"
        out["error"] = f"InvalidSignature: {reason}"
        print(json.dumps(out))
        return 1
    except (HTTPMessageSignaturesException, TypeError, ValueError) as e:
        # The library raises these for a bad selection policy (tag, label, require_components);
        # every failure of the signature itself arrives as InvalidSignature.
        out["error"] = f"bad input: {type(e).__name__}: {e}"
        print(json.dumps(out))
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Mints the jwt-auth test vectors with an independent implementation (PyJWT +
cryptography): keys, a JWKS, and tokens for every accept/reject case.
Writes filters/jwt-auth/testdata/vectors.json. Run: .venv/bin/python tests/mint_tokens.py"""
import base64
import json
import os

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ISS, AUD = "https://idp.umbrella.example", "api"
FAR, PAST = 4102444800, 1000000000  # 2100-01-01, 2001-09-09


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
p256 = ec.generate_private_key(ec.SECP256R1())
p384 = ec.generate_private_key(ec.SECP384R1())
ed = ed25519.Ed25519PrivateKey.generate()
hmac_secret = os.urandom(64)


def jwk(alg_cls, key, kid):
    d = json.loads(alg_cls.to_jwk(key.public_key()))
    d["kid"] = kid
    return d


keys = [
    jwk(RSAAlgorithm, rsa_key, "rsa-1"),
    jwk(ECAlgorithm, p256, "ec-256"),
    jwk(ECAlgorithm, p384, "ec-384"),
    jwk(OKPAlgorithm, ed, "ed-1"),
    {"kty": "oct", "kid": "hs-1", "k": b64(hmac_secret)},
]

claims = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": FAR, "tenant": "umbrella", "groups": ["beta"]}
signers = {
    "RS256": (rsa_key, "rsa-1"), "RS384": (rsa_key, "rsa-1"), "RS512": (rsa_key, "rsa-1"),
    "PS256": (rsa_key, "rsa-1"), "PS384": (rsa_key, "rsa-1"), "PS512": (rsa_key, "rsa-1"),
    "ES256": (p256, "ec-256"), "ES384": (p384, "ec-384"), "EdDSA": (ed, "ed-1"),
    "HS256": (hmac_secret, "hs-1"), "HS384": (hmac_secret, "hs-1"), "HS512": (hmac_secret, "hs-1"),
}


def sign(alg, payload=None, kid=None, headers=None):
    key, default_kid = signers[alg]
    h = {"kid": kid or default_kid}
    h.update(headers or {})
    return jwt.encode(payload or claims, key, algorithm=alg, headers=h)


cases = [{"name": f"valid {alg}", "token": sign(alg), "expect": "ok"} for alg in signers]
cases += [
    {"name": "expired", "token": sign("RS256", dict(claims, exp=PAST)), "expect": "expired"},
    {"name": "no exp", "token": sign("RS256", {k: v for k, v in claims.items() if k != "exp"}), "expect": "missing_exp"},
    {"name": "nbf in the future", "token": sign("ES256", dict(claims, nbf=FAR - 10)), "expect": "not_yet_valid"},
    {"name": "wrong issuer", "token": sign("ES256", dict(claims, iss="https://evil.example")), "expect": "bad_issuer"},
    {"name": "wrong audience", "token": sign("EdDSA", dict(claims, aud="other")), "expect": "bad_audience"},
    {"name": "audience array", "token": sign("EdDSA", dict(claims, aud=["x", AUD])), "expect": "ok"},
    {"name": "unknown kid", "token": sign("RS256", kid="nope"), "expect": "unknown_kid"},
    {"name": "alg none", "token": jwt.encode(claims, None, algorithm="none"), "expect": "bad_algorithm"},
]
# HS256 signed with the RSA public key's PEM, claiming the RSA kid: the
# classic algorithm confusion. PyJWT refuses to do it, so sign by hand.
import hashlib
import hmac as hmac_mod
from cryptography.hazmat.primitives import serialization

pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
body = b64(json.dumps(claims).encode())
mac = hmac_mod.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
cases.append({"name": "HS256 with the RSA public key", "token": f"{head}.{body}.{b64(mac)}", "expect": "bad_algorithm"})
good = sign("RS256")
h, p, s = good.split(".")
cases += [
    {"name": "tampered payload", "token": f"{h}.{b64(json.dumps(dict(claims, sub='mallory')).encode())}.{s}", "expect": "bad_signature"},
    {"name": "bad base64", "token": f"{h}.{p}!.{s}", "expect": "malformed"},
    {"name": "two segments", "token": f"{h}.{p}", "expect": "malformed"},
    {"name": "header not json", "token": f"{b64(b'{nope')}.{p}.{s}", "expect": "malformed"},
    {"name": "jku is never followed", "token": sign("RS256", kid="rsa-1", headers={"jku": "https://evil.example/jwks"}), "expect": "ok"},
    {"name": "other tenant", "token": sign("RS256", dict(claims, tenant="globex")), "expect": "ok"},
    {"name": "claims the reserved tenant", "token": sign("RS256", dict(claims, tenant="other")), "expect": "ok"},
    # RFC 7515 §4.1.11: an extension named in crit that the verifier does not
    # understand makes the JWS invalid, however well signed.
    {"name": "crit names an unknown extension",
     "token": sign("RS256", headers={"crit": ["exp-ext"], "exp-ext": 1}), "expect": "unsupported_crit"},
    # RFC 7797: an unencoded (here detached) payload is not read.
    {"name": "unencoded payload (b64 false)",
     "token": jwt.api_jws.encode(b"", rsa_key, algorithm="RS256",
                                 headers={"kid": "rsa-1", "b64": False, "crit": ["b64"]},
                                 is_payload_detached=True), "expect": "unsupported_crit"},
    # An issuer no provider has, with a key nobody knows either: a single
    # provider stops at the key; the decision names the issuer.
    {"name": "unknown issuer and kid", "token": sign("RS256", dict(claims, iss="https://evil.example"), kid="nope"),
     "expect": "unknown_kid", "decision": "bad_issuer"},
]

out = {"issuer": ISS, "audience": AUD, "jwks": {"keys": keys}, "cases": cases}
path = os.path.join(root, "filters", "jwt-auth", "testdata", "vectors.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
print(f"wrote {len(cases)} cases to {os.path.relpath(path, root)}")

# The example profile's JWT tenant trusts the same public keys, and the HMAC
# key by reference only ({"env": ...}): its value goes to examples/demo.env,
# which the demo and the e2e tests put in Envoy's environment.
profile_path = os.path.join(root, "examples", "tenants.json")
with open(profile_path) as f:
    profile = json.load(f)
provider = profile["tenants"]["umbrella"]["jwt_auth"]["providers"][0]
HMAC_ENV = "MESHWARE_DEMO_HMAC_KEY"
provider["jwks"] = {"keys": [k if k["kty"] != "oct" else {"kty": "oct", "kid": k["kid"], "k": {"env": HMAC_ENV}}
                             for k in keys]}
if "HS256" not in provider["algorithms"]:
    provider["algorithms"].append("HS256")
provider["issuer"], provider["audiences"] = ISS, [AUD]
with open(profile_path, "w") as f:
    json.dump(profile, f, indent=2)
    f.write("\n")
with open(os.path.join(root, "examples", "demo.env"), "w") as f:
    f.write("# Demo-only secrets, never for production. `make run` and the e2e tests put\n"
            "# them in Envoy's environment; the profile names them ({\"env\": \"NAME\"}),\n"
            "# Envoy hands them to the VMs (vm_config.environment_variables.host_env_keys).\n"
            "# Written by tests/mint_tokens.py.\n")
    f.write(f"{HMAC_ENV}={b64(hmac_secret)}\n")
names = ("valid RS256", "valid ES256", "expired", "other tenant", "valid HS256")
samples = {c["name"]: c["token"] for c in cases if c["name"] in names}
with open(os.path.join(root, "examples", "tokens.json"), "w") as f:
    json.dump(samples, f, indent=1)
    f.write("\n")
print("updated examples/tenants.json (umbrella JWKS), examples/tokens.json and examples/demo.env")

"""OAuth libraries nobody here wrote, against Portcullis, as Debian packages them: authlib (RFC 8414 metadata
validation, OAuth2Session with client credentials and the password grant, introspection, revocation),
requests-oauthlib (BackendApplicationClient, LegacyApplicationClient) and PyJWT (PyJWKClient from the
metadata). authlib 1.2 has no RFC 9068 validator, so every access token is also checked against RFC 9068
§2 and §4 here. Prints {"failures": [...], "client_ids": {...}} as JSON.

usage: oauth_libraries.py HOST USERNAME CLIENT_ID < "password\\nclient_secret"
(loopback is plain HTTP: run with AUTHLIB_INSECURE_TRANSPORT=1 and OAUTHLIB_INSECURE_TRANSPORT=1)
"""
import json
import sys
import time

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from oauthlib.oauth2 import BackendApplicationClient, LegacyApplicationClient
from requests_oauthlib import OAuth2Session as OAuthlibSession

host, username, client_id = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
password, client_secret = sys.stdin.read().split("\n")[:2]
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


# RFC 8414: the metadata, validated by authlib.
class Metadata(AuthorizationServerMetadata):
    def validate_response_types_supported(self):
        # RFC 8414 §2: REQUIRED, a JSON array of what the authorization endpoint answers. Portcullis has none,
        # so the array is empty; authlib 1.2 takes an empty array for a missing one, so this one check is ours.
        check(self.get("response_types_supported") == [], "RFC 8414 §2: response_types_supported is an empty array")


metadata = requests.get(f"{host}/.well-known/oauth-authorization-server").json()
try:
    Metadata(metadata).validate()
except ValueError as e:
    failures.append(f"authlib RFC 8414 validation: {e}")
check(metadata.get("issuer") == host, "RFC 8414 §3.3: the issuer is the URL the metadata was asked of")
oidc = requests.get(f"{host}/.well-known/openid-configuration").json()
check(oidc == metadata, "RFC 9068 §4: the OpenID and OAuth metadata agree")
for claim in ("id_token_signing_alg_values_supported", "subject_types_supported", "userinfo_endpoint"):
    check(claim not in oidc, f"no OpenID-only claim it cannot honour: {claim}")

tokens = {}

# authlib: client credentials (HTTP Basic), a public client's password grant, introspection, revocation.
machine = OAuth2Session(client_id, client_secret, token_endpoint_auth_method="client_secret_basic")
tokens["authlib client_credentials"] = machine.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")["access_token"]
check(machine.get(f"{host}/api/v1/me").status_code == 200, "authlib: the client's token is accepted")
person = OAuth2Session("portcullis-cli", token_endpoint_auth_method="none")
tokens["authlib password"] = person.fetch_token(metadata["token_endpoint"], username=username, password=password)["access_token"]
check(person.get(f"{host}/api/v1/me").json().get("username") == username, "authlib: the person's token is theirs")
introspected = machine.introspect_token(metadata["introspection_endpoint"], token=tokens["authlib password"]).json()
check(introspected.get("active") is True and introspected.get("client_id") == "portcullis-cli", f"RFC 7662 introspection: {introspected}")

# requests-oauthlib: the backend (client credentials) and legacy (password) flows.
backend = OAuthlibSession(client=BackendApplicationClient(client_id=client_id))
tokens["requests-oauthlib backend"] = backend.fetch_token(metadata["token_endpoint"], client_id=client_id, client_secret=client_secret)["access_token"]
legacy = OAuthlibSession(client=LegacyApplicationClient(client_id="portcullis-cli"))
tokens["requests-oauthlib legacy"] = legacy.fetch_token(metadata["token_endpoint"], username=username, password=password,
                                                       client_id="portcullis-cli", include_client_id=True)["access_token"]

# PyJWT: keys from the metadata's jwks_uri; every token is an RFC 9068 JWT access token.
keys = jwt.PyJWKClient(metadata["jwks_uri"])
client_ids = {}
for name, token in tokens.items():
    header = jwt.get_unverified_header(token)
    check(header.get("typ") in ("at+jwt", "application/at+jwt"), f"RFC 9068 §2.1 / §4 step 1: typ of {name} is {header.get('typ')}")
    check(header.get("alg") not in (None, "none"), f"RFC 9068 §4 step 5: alg of {name}")
    try:
        claims = jwt.decode(token, keys.get_signing_key_from_jwt(token).key, algorithms=[header["alg"]], audience="portcullis",
                            issuer=metadata["issuer"], options={"require": ["iss", "exp", "aud", "sub", "iat", "jti"]})
    except jwt.PyJWTError as e:
        failures.append(f"PyJWT rejected {name}: {e}")
        continue
    # RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat and jti are REQUIRED.
    check(isinstance(claims.get("client_id"), str), f"RFC 9068 §2.2: client_id in {name}")
    check(claims["exp"] > time.time(), f"RFC 9068 §4 step 6: {name} has not expired")
    client_ids[name] = claims.get("client_id")

# RFC 7009: after revocation the token is inactive.
machine.revoke_token(metadata["revocation_endpoint"], token=tokens["authlib password"])
after = machine.introspect_token(metadata["introspection_endpoint"], token=tokens["authlib password"]).json()
check(after == {"active": False}, f"RFC 7009: a revoked token is inactive: {after}")

print(json.dumps({"failures": failures, "client_ids": client_ids}))

"""Verify a client assertion signed by warden-auth, with PyJWT: an independent check of the
signature (PS256 or RS256), the header's thumbprint, and the claims Microsoft documents.

usage: ASSERTION=<jwt> verify_assertion.py CERT_PEM ALG AUD CLIENT_ID HEADER SHA1_HEX SHA256_HEX
"""
import base64
import os
import sys
import time

import jwt
from cryptography import x509


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> int:
    cert_pem, alg, aud, client_id, header_name, sha1_hex, sha256_hex = sys.argv[1:8]
    token = os.environ["ASSERTION"]
    cert = x509.load_pem_x509_certificate(open(cert_pem, "rb").read())
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg, header
    assert header["typ"] == "JWT", header
    expected = b64url(bytes.fromhex(sha256_hex if header_name == "x5t#S256" else sha1_hex))
    assert header.get(header_name) == expected, (header, expected)
    claims = jwt.decode(
        token,
        cert.public_key(),
        algorithms=[alg],
        audience=aud,
        issuer=client_id,
        options={"require": ["exp", "iss", "sub", "aud", "jti", "nbf", "iat"]},
    )
    assert claims["sub"] == client_id, claims
    assert 0 < claims["exp"] - claims["iat"] <= 600, claims
    assert abs(claims["iat"] - time.time()) < 120, claims
    print(f"verified {alg} assertion with {header_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""An independent CloudFront URL signer and verifier: botocore's CloudFrontSigner, with an RSA
signer from `cryptography`, to check the gateway's signed URLs against.

Usage:
  cloudfront_signer.py keygen PEM_PATH [pkcs8]
      writes a new 2048-bit RSA private key (PKCS#1 PEM, or PKCS#8)
  cloudfront_signer.py sign PEM_PATH KEY_ID URL EXPIRES [IP_RANGE|- [START]]
      prints botocore's signed URL: canned policy, or custom with an IP range or a start time
      (times in seconds since the epoch); RESOURCE for RTMP is the URL itself
  cloudfront_signer.py verify PEM_PATH SIGNED_URL
      prints OK when the signature verifies with the key's public half, else BAD
"""

import base64
import datetime
import sys
import urllib.parse

from botocore.signers import CloudFrontSigner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def load(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def when(seconds):
    return datetime.datetime.fromtimestamp(int(seconds), tz=datetime.timezone.utc)


def url_b64decode(text):
    return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"))


def main(args):
    command = args[0]
    if command == "keygen":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pkcs8 = len(args) > 2 and args[2] == "pkcs8"
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8
            if pkcs8
            else serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        with open(args[1], "wb") as f:
            f.write(pem)
        return
    key = load(args[1])
    if command == "sign":
        key_id, url, expires = args[2], args[3], args[4]
        ip_range = args[5] if len(args) > 5 and args[5] != "-" else None
        start = when(args[6]) if len(args) > 6 else None
        signer = CloudFrontSigner(
            key_id, lambda m: key.sign(m, padding.PKCS1v15(), hashes.SHA1())
        )
        if ip_range is None and start is None:
            print(signer.generate_presigned_url(url, date_less_than=when(expires)))
        else:
            policy = signer.build_policy(
                url, when(expires), date_greater_than=start, ip_address=ip_range
            )
            print(signer.generate_presigned_url(url, policy=policy))
        return
    if command == "verify":
        signed = args[2]
        base, query = signed.split("?", 1)
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        if "Policy" in params:
            policy = url_b64decode(params["Policy"])
        else:
            policy = CloudFrontSigner("-", None).build_policy(
                base, when(params["Expires"])
            ).encode()
        try:
            key.public_key().verify(
                url_b64decode(params["Signature"]), policy, padding.PKCS1v15(), hashes.SHA1()
            )
            print("OK")
        except InvalidSignature:
            print("BAD")
        return
    raise SystemExit(f"unknown command {command}")


main(sys.argv[1:])

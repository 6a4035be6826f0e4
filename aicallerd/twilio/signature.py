"""Twilio request signatures (``X-Twilio-Signature``), as twilio-python's RequestValidator.

Every webhook and the Media Streams WebSocket upgrade is signed, so this is what keeps
strangers from driving the assistant. The URL must be the public one Twilio requested
(the configured base URL, never one rebuilt from Host/X-Forwarded-* headers).
"""

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlparse

__all__ = ["Params", "compute_signature", "validate_body_sha256", "validate_signature"]

#: Form parameters: one value per name, or a list for repeated names.
Params = Mapping[str, str] | Mapping[str, Sequence[str]]

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def compute_signature(auth_token: str, url: str, params: Params | None = None) -> str:
    """Base64 HMAC-SHA1 over the URL followed by each ``name+value``, sorted by name then value.

    Repeated identical values count once, as in twilio-python.
    """
    data = url
    mapping: Params = params or {}
    for name in sorted(mapping):
        value = mapping[name]
        values = [value] if isinstance(value, str) else list(value)
        for v in sorted(set(values)):
            data += name + v
    mac = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """The URL as given, without its port and with the scheme's default port added.

    Twilio is not consistent about which of the port variants it signs.
    """
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError:  # malformed port: only the URL as given can match
        return [url]
    variants = [url, parsed.geturl()]
    if port:
        without_port = parsed.netloc.rpartition(":")[0]  # keeps userinfo, host case, [v6]
        variants.append(parsed._replace(netloc=without_port).geturl())
    else:
        default = _DEFAULT_PORTS.get(parsed.scheme.lower(), 80)
        variants.append(parsed._replace(netloc=f"{parsed.netloc}:{default}").geturl())
    return list(dict.fromkeys(variants))


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def validate_body_sha256(url: str, body: bytes) -> bool:
    """Check the ``bodySHA256`` query parameter Twilio adds to URLs of JSON-bodied requests."""
    try:
        expected = parse_qs(urlparse(url).query).get("bodySHA256")
    except ValueError:
        return False
    if not expected:
        return False
    return _equal(hashlib.sha256(body).hexdigest(), expected[0])


def validate_signature(
    auth_token: str, url: str, params: Params | bytes | None, signature: str
) -> bool:
    """True if ``signature`` is Twilio's for this request, compared in constant time.

    ``params`` is the decoded form body (or None for GET and WebSocket upgrades). For a
    JSON body pass the raw bytes: the URL must then carry a matching ``bodySHA256`` and
    the signature covers the URL alone.
    """
    if isinstance(params, bytes | bytearray | memoryview):
        if not validate_body_sha256(url, bytes(params)):
            return False
        params = None
    ok = False
    for candidate in _url_variants(url):
        # No early exit: check every variant so timing does not reveal which one matched.
        ok |= _equal(compute_signature(auth_token, candidate, params), signature)
    return ok

import hashlib
import random
from collections.abc import Mapping

import pytest
from twilio.request_validator import RequestValidator

from aicallerd.twilio.signature import (
    compute_signature,
    validate_body_sha256,
    validate_signature,
)

TOKEN = "12345"
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
VECTOR_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


class MultiDict(dict):
    """What twilio-python expects for repeated names (Flask/Werkzeug style)."""

    def getall(self, name: str) -> list[str]:
        value = self[name]
        return list(value) if isinstance(value, list) else [value]


def test_twilio_python_test_vector() -> None:
    assert compute_signature(TOKEN, VECTOR_URL, VECTOR_PARAMS) == VECTOR_SIGNATURE
    assert validate_signature(TOKEN, VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE)


def test_rejects_wrong_token_params_url_or_signature() -> None:
    assert not validate_signature("54321", VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE)
    assert not validate_signature(
        TOKEN, VECTOR_URL, {**VECTOR_PARAMS, "Digits": "9"}, VECTOR_SIGNATURE
    )
    assert not validate_signature(TOKEN, VECTOR_URL + "&x=1", VECTOR_PARAMS, VECTOR_SIGNATURE)
    assert not validate_signature(TOKEN, VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE[:-2] + "A=")
    assert not validate_signature(TOKEN, VECTOR_URL, VECTOR_PARAMS, "")
    assert not validate_signature(TOKEN, VECTOR_URL, VECTOR_PARAMS, "sïgnature")


@pytest.mark.parametrize(
    ("signed_url", "request_url"),
    [
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
        ),
        (
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            "https://mycompany.com/myapp.php?foo=1&bar=2",
        ),
        ("http://example.com/voice", "http://example.com:80/voice"),
        ("http://example.com:80/voice", "http://example.com/voice"),
        ("https://example.com/voice", "https://example.com:8443/voice"),
        ("wss://example.com/stream", "wss://example.com:443/stream"),
        ("wss://example.com:443/stream", "wss://example.com/stream"),
        ("ws://example.com:80/stream", "ws://example.com/stream"),
    ],
)
def test_port_variants_are_accepted(signed_url: str, request_url: str) -> None:
    signature = compute_signature(TOKEN, signed_url, VECTOR_PARAMS)
    assert validate_signature(TOKEN, request_url, VECTOR_PARAMS, signature)


def test_other_ports_and_hosts_are_not_confused() -> None:
    signature = compute_signature(TOKEN, "https://example.com:8443/voice", {})
    assert not validate_signature(TOKEN, "https://example.com:9443/voice", {}, signature)
    signature = compute_signature(TOKEN, "https://example.com:80/voice", {})
    assert not validate_signature(TOKEN, "https://example.com:443/voice", {}, signature)
    assert not validate_signature(TOKEN, "https://evil.com/voice", {}, signature)


def test_userinfo_and_ipv6_hosts_keep_their_shape_without_the_port() -> None:
    # twilio-python mangles these (it cuts the netloc at the first colon); we do not.
    for signed, requested in [
        ("https://user:pw@example.com/voice", "https://user:pw@example.com:443/voice"),
        ("https://[2001:db8::1]/voice", "https://[2001:db8::1]:8443/voice"),
    ]:
        assert validate_signature(TOKEN, requested, None, compute_signature(TOKEN, signed))


def test_malformed_port_still_checks_the_url_as_given() -> None:
    url = "https://example.com:notaport/voice"
    assert validate_signature(TOKEN, url, None, compute_signature(TOKEN, url))
    assert not validate_signature(
        TOKEN, url, None, compute_signature(TOKEN, "https://example.com/voice")
    )


def test_websocket_upgrade_signed_without_params() -> None:
    url = "wss://assistant.example.org/ai_caller/stream"
    signature = compute_signature("auth-token", url)
    assert validate_signature("auth-token", url, None, signature)
    assert validate_signature("auth-token", url, {}, signature)
    assert not validate_signature("auth-token", url, {"token": "x"}, signature)
    assert not validate_signature(
        "auth-token", "https://assistant.example.org/ai_caller/stream", None, signature
    )


def test_repeated_params_are_sorted_by_value() -> None:
    params = {"StatusCallbackEvent": ["ringing", "answered", "initiated"], "To": "+1555"}
    expected = compute_signature(
        TOKEN,
        "https://h/x",
        MultiDict({"StatusCallbackEvent": ["answered", "initiated", "ringing"], "To": ["+1555"]}),
    )
    assert compute_signature(TOKEN, "https://h/x", params) == expected
    oracle = RequestValidator(TOKEN).compute_signature("https://h/x", MultiDict(params))
    assert expected == oracle
    # like twilio-python, a value repeated verbatim counts once
    duplicated = {"StatusCallbackEvent": ["ringing", "ringing"]}
    single = compute_signature(TOKEN, "https://h/x", {"StatusCallbackEvent": "ringing"})
    assert compute_signature(TOKEN, "https://h/x", duplicated) == single
    assert RequestValidator(TOKEN).compute_signature("https://h/x", MultiDict(duplicated)) == single


def test_json_body_variant() -> None:
    body = b'{"CallSid":"CA123","Status":"completed"}'
    url = "https://example.com/status?bodySHA256=" + hashlib.sha256(body).hexdigest()
    signature = compute_signature(TOKEN, url)
    assert validate_body_sha256(url, body)
    assert validate_signature(TOKEN, url, body, signature)
    assert not validate_body_sha256(url, body + b" ")
    assert not validate_signature(TOKEN, url, body + b" ", signature)
    assert not validate_body_sha256("https://example.com/status", body)
    assert not validate_signature(TOKEN, "https://example.com/status", body, signature)
    # twilio-python agrees (it takes the body as text)
    assert RequestValidator(TOKEN).validate(url, body.decode(), signature)


# --- property-style comparison against twilio-python ----------------------------------

URLS = [
    "https://example.com/voice",
    "https://example.com:443/voice",
    "https://example.com:8443/voice?x=1&y=%20two",
    "http://example.com/voice",
    "http://example.com:80/a/b?c=d",
    "https://Example.COM/Voice?Case=Kept",
    "https://example.com/caf%C3%A9?q=%E2%82%AC&empty=",
    "https://[2001:db8::1]:8443/voice",
    "https://example.com",
]

ALPHABET = ["a", "Z", "0", "+", " ", "&", "=", "é", "€", "日", "%", "😀"]


def random_text(rng: random.Random, max_len: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_len)))


def random_params(rng: random.Random) -> dict[str, str | list[str]]:
    params: dict[str, str | list[str]] = {}
    for _ in range(rng.randint(0, 6)):
        name = rng.choice(["CallSid", "From", "To", "Digits", "SpeechResult", "Évent", "x"])
        if rng.random() < 0.3:
            params[name] = [random_text(rng, 8) for _ in range(rng.randint(1, 4))]
        else:
            params[name] = random_text(rng, 12)
    return params


def oracle_params(params: Mapping[str, str | list[str]]) -> MultiDict:
    return MultiDict(params)


def test_matches_twilio_python_compute_and_validate() -> None:
    rng = random.Random(20240501)
    oracle = RequestValidator(TOKEN)
    for trial in range(300):
        url = rng.choice(URLS)
        params = random_params(rng)
        ours = compute_signature(TOKEN, url, params)
        assert ours == oracle.compute_signature(url, oracle_params(params)), (url, params)
        for other in {
            url,
            url.replace(":443/", "/"),
            url.replace("example.com/", "example.com:443/"),
        }:
            assert validate_signature(TOKEN, other, params, ours) == oracle.validate(
                other, oracle_params(params), ours
            ), (trial, url, other, params)
        forged = compute_signature(TOKEN + "x", url, params)
        assert not validate_signature(TOKEN, url, params, forged)
        assert not oracle.validate(url, oracle_params(params), forged)

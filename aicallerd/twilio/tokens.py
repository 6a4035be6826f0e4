"""Short-lived, single-use tokens binding a Media Stream to the call we answered.

The webhook that returns ``<Connect><Stream>`` issues a token as a ``<Parameter>``;
the stream's ``start`` event must bring it back for the same CallSid before it
expires, and only once. This holds even if the WebSocket signature check were
bypassed (e.g. a replayed upgrade request). Time is passed in, so this is testable
and works with any clock (trio's included) as long as issue and verify share it.
"""

import base64
import hashlib
import hmac
import secrets

__all__ = ["StreamTokens"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class StreamTokens:
    """Issues and checks ``<expiry_ms>.<nonce>.<hmac>`` tokens (URL-safe, ~70 characters)."""

    def __init__(self, secret: bytes, ttl: float = 120.0) -> None:
        if not secret:
            raise ValueError("StreamTokens needs a non-empty secret")
        if not ttl > 0:
            raise ValueError(f"StreamTokens ttl must be positive, got {ttl}")
        self._secret = bytes(secret)
        self._ttl = ttl
        self._used: dict[str, int] = {}  # token -> expiry_ms, forgotten once expired

    def _mac(self, call_sid: str, expiry: str, nonce: str) -> str:
        message = f"{call_sid}\x00{expiry}\x00{nonce}".encode()
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest())

    def issue(self, call_sid: str, now: float) -> str:
        """A token for ``call_sid`` valid until ``now + ttl``; the nonce keeps each one unique."""
        expiry = str(int((now + self._ttl) * 1000))
        nonce = _b64(secrets.token_bytes(9))
        return f"{expiry}.{nonce}.{self._mac(call_sid, expiry, nonce)}"

    def verify(self, call_sid: str, token: str, now: float) -> bool:
        """True once for a genuine, unexpired token of this call; False for anything else."""
        now_ms = now * 1000
        self._used = {t: exp for t, exp in self._used.items() if exp > now_ms}
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3 or not token.isascii():
            return False
        expiry, nonce, mac = parts
        if not hmac.compare_digest(self._mac(call_sid, expiry, nonce), mac):
            return False
        expiry_ms = int(expiry)  # authentic, so it is the decimal string issue() wrote
        if now_ms >= expiry_ms or token in self._used:
            return False
        self._used[token] = expiry_ms
        return True

"""Console logins kept in Redis, so that logging out ends a session for good.

The browser holds a signed cookie with a random session id; Redis holds the operator's name
under a digest of that id (a copy of the Redis data holds no usable session) for at most
``ttl_s``. Logging out deletes the record: the same cookie, copied before, no longer works.
"""

from __future__ import annotations

import hashlib
import secrets

import redis

from reseller_webhooks.producers.wire import Keys


class Sessions:
    def __init__(self, client: redis.Redis, keys: Keys, *, ttl_s: int) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_s = ttl_s

    def _key(self, session_id: str) -> str:
        return self.keys.console_session(hashlib.sha256(session_id.encode()).hexdigest())

    def open(self, operator: str) -> str:
        """A new session of ``operator``; returns its id (for the cookie)."""
        session_id = secrets.token_urlsafe(32)
        self.redis.set(self._key(session_id), operator, ex=self.ttl_s)
        return session_id

    def operator(self, session_id: str) -> str | None:
        """Whose session this is, or None when it ended or never was."""
        raw = self.redis.get(self._key(session_id))
        return raw.decode() if isinstance(raw, bytes) else None

    def close(self, session_id: str) -> None:
        self.redis.delete(self._key(session_id))

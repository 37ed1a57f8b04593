"""A Redis at ``maxmemory`` with ``noeviction`` refuses writes: a publish is refused with the
documented ``UnavailableError``, records nothing, and goes through once memory is raised.

The session's real redis-server is filled until it refuses (``CONFIG SET maxmemory`` just below
what it holds), then given room again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from reseller_webhooks.producers.errors import UnavailableError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.samples import sample_user


@pytest.fixture
def full_redis(rdb: redis.Redis) -> Iterator[redis.Redis]:
    """The session's Redis with more in it than ``maxmemory`` allows; unlimited again after."""
    before = rdb.config_get("maxmemory-policy")["maxmemory-policy"]
    rdb.set("ballast", b"x" * 2_000_000)
    used = int(rdb.info("memory")["used_memory"])
    rdb.config_set("maxmemory-policy", "noeviction")
    rdb.config_set("maxmemory", str(used - 1_000_000))
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            rdb.set("probe", b"y" * 1000)  # the server really refuses writes now
        yield rdb
    finally:
        rdb.config_set("maxmemory", "0")
        rdb.config_set("maxmemory-policy", before)
        rdb.delete("ballast")


def test_a_full_redis_refuses_a_publish_as_unavailable_and_records_nothing(
    full_redis: redis.Redis, publisher: Publisher, keys: Keys
) -> None:
    user = {**sample_user(), "id": "usr_full"}
    with pytest.raises(UnavailableError) as refused:
        publisher.user_created(user, idempotency_key="full-1")
    assert refused.value.status == 503
    assert "OutOfMemoryError" in str(refused.value)
    assert full_redis.llen(keys.pending) == 0
    assert list(full_redis.scan_iter(match=f"{keys.prefix}:event:*")) == []
    assert full_redis.get(f"{keys.prefix}:idem:full-1") is None

    full_redis.config_set("maxmemory", "0")  # memory freed: the same publish goes through once
    first = publisher.user_created(user, idempotency_key="full-1")
    again = publisher.user_created(user, idempotency_key="full-1")
    assert first == again
    assert full_redis.lrange(keys.pending, 0, -1) == [first.encode()]


def test_a_read_only_replica_refuses_a_publish_as_unavailable(
    rdb: redis.Redis, publisher: Publisher, keys: Keys
) -> None:
    """A failover can leave a client on a replica for a moment: a refusal, not a crash."""
    rdb.config_set("replica-read-only", "yes")
    rdb.replicaof("127.0.0.1", "1")  # a master that is not there: read-only at once
    try:
        with pytest.raises(UnavailableError) as refused:
            publisher.user_created(sample_user())
        assert "ReadOnlyError" in str(refused.value)
    finally:
        rdb.replicaof("NO", "ONE")
    assert rdb.llen(keys.pending) == 0

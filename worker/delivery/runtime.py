"""Everything a worker process holds for its lifetime, built once from settings."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import redis

from reseller_webhooks.producers.connection import redis_client
from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.config.subscribers import SubscribersConfig, load_config
from reseller_webhooks.worker.delivery.deliverer import Deliverer
from reseller_webhooks.worker.http.sender import Sender
from reseller_webhooks.worker.ops.store_guard import StoreGuard
from reseller_webhooks.worker.ops.tracing import AttemptTracing
from reseller_webhooks.worker.records.store import Store


def load_subscribers(settings: WorkerSettings) -> SubscribersConfig:
    if settings.subscribers is None:
        raise ConfigError("WEBHOOKS_SUBSCRIBERS is not set: point it at the subscribers YAML file")
    return load_config(settings.subscribers)


def make_store(settings: WorkerSettings, client: redis.Redis | None = None) -> Store:
    return Store(
        client or redis_client(settings),
        Keys(settings.key_prefix),
        record_retention_s=settings.record_retention_s,
        dead_letter_retention_s=settings.dead_letter_retention_s,
        attempt_log_size=settings.attempt_log_size,
        trigger_expiry_s=settings.visibility_timeout_s,
        failing_after=settings.failing_after,
        schedule_scale=settings.schedule_scale,
    )


def make_sender(settings: WorkerSettings, config: SubscribersConfig) -> Sender:
    return Sender(config, body_limit=settings.response_body_bytes, keep_alive=settings.concurrency)


@dataclass(frozen=True)
class Runtime:
    settings: WorkerSettings
    store: Store
    deliverer: Deliverer
    #: Stops the work while Redis came back empty or behind (``ops.store_guard``).
    guard: StoreGuard

    @property
    def keys(self) -> Keys:
        return self.store.keys

    @property
    def config(self) -> SubscribersConfig:
        """The subscribers file as last loaded (a reload swaps it, see ``config.reload``)."""
        return self.deliverer.config

    @classmethod
    def build(cls, settings: WorkerSettings) -> Runtime:
        config = load_subscribers(settings)
        store = make_store(settings)
        deliverer = Deliverer(
            config=config,
            store=store,
            sender=make_sender(settings, config),
            settings=settings,
            tracing=AttemptTracing.from_env(os.environ),
        )
        return cls(settings=settings, store=store, deliverer=deliverer, guard=StoreGuard(store))


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime(settings: WorkerSettings) -> Runtime:
    """The process-wide runtime, built on first use (thread-safe)."""
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = Runtime.build(settings)
    return _runtime

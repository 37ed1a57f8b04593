"""The HTTP ingest API (``reseller-webhooks api``): publishing from any language.

``POST /v1/events`` and ``POST /v1/events/batch`` go through the same validation, size limit,
idempotency and commit point as :class:`~reseller_webhooks.producers.publisher.Publisher`; the
API only adds what HTTP needs: producers' tokens (``tokens.py``), RFC 9457 problems
(``problems.py``), its metrics (``metrics.py``), the handlers (``handlers.py``) and the server
(``app.py``). The OpenAPI document it serves is ``openapi.yaml``.
"""

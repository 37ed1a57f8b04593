"""The benchmark: this worker against a naive Celery task, a Celery no-op and a bare HTTP loop.

``python -m worker.bench --quick`` (under a minute) or ``reseller-webhooks bench``; see
docs/benchmarks.md for what each figure means.
"""

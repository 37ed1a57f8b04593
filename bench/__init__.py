"""The benchmark: this worker against a naive Celery task, a Celery no-op and a bare HTTP loop.

``python -m bench --quick`` (under a minute, from the repository root); see
docs/benchmarks.md for what each figure means.
"""

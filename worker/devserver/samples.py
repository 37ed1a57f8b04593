"""Sample data for ``publish --sample``, ``dev`` and the benchmark (light: stdlib only)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def sample_user() -> dict[str, Any]:
    """The reseller user of the API documents' example, as ``publish --sample`` sends it."""
    text = resources.files(__package__).joinpath("examples/user.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


#: The sample event as the ingest API takes it, written by ``dev`` for ``curl --data-binary @``.
SAMPLE_EVENT_FILE = "sample-event.json"


def write_sample_event(directory: Path) -> Path:
    """``directory/sample-event.json``: ``{"event": "reseller.user.created", "data": <sample>}``."""
    path = directory / SAMPLE_EVENT_FILE
    event = {"event": "reseller.user.created", "data": sample_user()}
    path.write_text(json.dumps(event, indent=2) + "\n", encoding="utf-8")
    return path

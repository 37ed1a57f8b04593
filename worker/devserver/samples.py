"""Sample data for ``publish --sample``, ``dev`` and the benchmark (light: stdlib only)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def sample_user() -> dict[str, Any]:
    """The reseller user of the API documents' example, as ``publish --sample`` sends it."""
    text = resources.files(__package__).joinpath("examples/user.json").read_text(encoding="utf-8")
    return dict(json.loads(text))

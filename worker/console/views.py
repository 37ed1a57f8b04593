"""How the console shows things: pure functions the templates and handlers use."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import urlsplit

from reseller_webhooks.worker.records.activity import DeliveryStory, Rate

#: What a lookup query is, when the operator does not say.
LOOKUP_KINDS = ("user", "event", "delivery")


def iso_ms(ms: int | float | str | None) -> str:
    """Epoch milliseconds as a UTC ISO time to the second (``2026-11-22T09:15:22Z``); '' when
    unknown."""
    if ms is None or ms == "":
        return ""
    try:
        when = datetime.fromtimestamp(float(ms) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return ""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_text(value: object) -> str:
    """An ISO time from an attempt log or a dead letter (``...T09:15:22.104Z``), to the second."""
    text = str(value or "")
    if len(text) > 20 and text[19] == "." and text.endswith("Z"):
        return text[:19] + "Z"
    return text


def age(seconds: float | None) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``; '' for none."""
    if not seconds or seconds <= 0:
        return ""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def success(rate: Rate | None) -> str:
    """``97.5 % of 40``; ``no attempts`` without any."""
    if rate is None or rate.percent is None:
        return "no attempts"
    return f"{rate.percent:.1f} % of {rate.total}"


def attempt_result(attempt: dict[str, object]) -> str:
    """An attempt's HTTP status, else its error."""
    status = attempt.get("status")
    if status is not None:
        return f"HTTP {status}"
    return str(attempt.get("error") or "")


def lookup_kind(query: str, kind: str = "auto") -> str:
    """What a lookup query names: a delivery id (``EVENT:SUBSCRIBER``), an event id
    (``msg_...``) or else a user id, unless ``kind`` says."""
    if kind in LOOKUP_KINDS:
        return kind
    if ":" in query:
        return "delivery"
    if query.startswith("msg_"):
        return "event"
    return "user"


def local_path(target: str | None, default: str = "/subscribers") -> str:
    """``target`` when it is a path on this site (after a login), else ``default``: never
    another site (``//evil.example``, ``https://...``), never a control character."""
    if not target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default  # a line break would split the Location header
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target:
        return default
    return target


def delivery_facts(delivery: DeliveryStory) -> list[str]:
    """A delivery's record in a few words: attempts, how it was triggered, when it was fanned
    out, its next attempt or when it finished, and why it ended."""
    record = delivery.record
    facts = [f"{record.get('attempts', len(delivery.attempts))} attempt(s)"]
    if record.get("trigger") == "manual":
        facts.append("replayed by an operator")
    if record.get("created"):
        facts.append(f"fanned out {iso_ms(record['created'])}")
    if record.get("next") and delivery.state == "waiting":
        facts.append(f"next attempt {iso_ms(record['next'])}")
    if record.get("done"):
        facts.append(f"finished {iso_ms(record['done'])}")
    if record.get("reason"):
        facts.append(record["reason"])
    return facts


def pretty_json(body: str) -> str:
    """``body`` indented when it is JSON, else as it is."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body

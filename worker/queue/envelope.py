"""Is a raw queue entry a message kombu's Redis transport can handle? A pure judgement.

kombu stores each message on a Redis list as a JSON envelope::

    {"body": "<base64>", "content-type": "application/json", "content-encoding": "utf-8",
     "headers": {"task": ..., "id": ...},
     "properties": {"body_encoding": "base64", "delivery_tag": "<uuid>",
                    "delivery_info": {"exchange": ..., "routing_key": ...}, ...}}

and trusts it: anything else raises inside the worker's event loop, which Celery treats as an
unrecoverable error (the worker exits and the entry is gone). :func:`screen` names what is wrong
with an entry, so that the transport (``queue.kombu_overrides``) can record and drop it instead.
What it admits is exactly what kombu can turn into a message and put back on a queue; whether the
message is a valid task (content type, task name, arguments) is Celery's part (``queue.consumer``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

#: Longest keyword-argument name a record keeps.
NAME_CHARS = 40


class Codec(Protocol):
    def decode(self, s: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Stray:
    """A queue entry that is not a message: why, and for which task (``?`` when unknown)."""

    reason: str
    task: str = "?"


def shape(raw: bytes | str | None, content_type: Any = None, task_id: Any = None) -> dict[str, Any]:
    """What a record of a dropped entry keeps of it: its size, and its content type and task id
    when known; never a byte of its body (a ``webhooks.publish`` body is personal data)."""
    data = raw.encode("utf-8", errors="replace") if isinstance(raw, str) else raw or b""
    found: dict[str, Any] = {"bytes": len(data)}
    if isinstance(content_type, str) and content_type:
        found["content_type"] = content_type[:NAME_CHARS]
    if isinstance(task_id, str) and task_id:
        found["task_id"] = task_id[:NAME_CHARS]
    return found


def arguments_shape(args: Any, kwargs: Any) -> dict[str, Any]:
    """What a record of a task called with the wrong arguments keeps: the kind of each
    argument and the names of the keyword arguments, never their values."""
    kinds = [_kind(a) for a in args] if isinstance(args, (list, tuple)) else _kind(args)
    names = sorted(str(k)[:NAME_CHARS] for k in kwargs) if isinstance(kwargs, dict) else []
    return {"args": kinds, "kwargs": names}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _task(payload: Mapping[str, Any]) -> str:
    headers = payload.get("headers")
    task = headers.get("task") if isinstance(headers, dict) else None
    return task[:200] if isinstance(task, str) and task else "?"


def screen(raw: bytes | str, codecs: Mapping[str, Codec]) -> Stray | None:
    """``None`` if kombu can deliver ``raw``; else what is wrong, naming the field and the rule.

    ``codecs`` are the channel's body codecs (kombu: ``{"base64": Base64()}``); a body encoding
    of ``utf-8`` or none leaves the body as it is, as kombu does.
    """
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        payload = json.loads(text)
    except ValueError as exc:
        return Stray(f"not JSON: {exc}")
    return screen_payload(payload, codecs)


def screen_unacked(raw: bytes | str, codecs: Mapping[str, Codec]) -> Stray | None:
    """:func:`screen` for an entry of kombu's ``unacked`` hash: ``[envelope, exchange, key]``.

    kombu keeps each delivered, unacknowledged message there and puts the envelope back on its
    queue when the visibility timeout passes (or the worker stops); an entry it cannot parse
    stops every worker at start.
    """
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        entry = json.loads(text)
    except ValueError as exc:
        return Stray(f"unacked entry not JSON: {exc}")
    if not (
        isinstance(entry, list)
        and len(entry) == 3
        and isinstance(entry[1], str)
        and isinstance(entry[2], str)
    ):
        return Stray("unacked entry: must be [envelope, exchange, routing_key]")
    return screen_payload(entry[0], codecs)


def screen_payload(payload: Any, codecs: Mapping[str, Codec]) -> Stray | None:
    """:func:`screen` for an entry already parsed from JSON (kombu parses broadcasts itself)."""
    if not isinstance(payload, dict):
        return Stray(f"not a message envelope: a JSON {_kind(payload)}, expected an object")
    task = _task(payload)
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        return Stray(f"field 'properties': {_kind(properties)}, must be an object", task)
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        return Stray("field 'properties.delivery_tag': must be a non-empty string", task)
    info = properties.get("delivery_info")
    if not (
        isinstance(info, dict)
        and isinstance(info.get("exchange"), str)
        and isinstance(info.get("routing_key"), str)
    ):
        return Stray(
            "field 'properties.delivery_info': must be an object with string "
            "'exchange' and 'routing_key'",
            task,
        )
    if not isinstance(payload.get("headers"), dict):
        return Stray(f"field 'headers': {_kind(payload.get('headers'))}, must be an object", task)
    for name in ("content-type", "content-encoding"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            return Stray(f"field '{name}': must be a string", task)
    body = payload.get("body")
    if body is None or body == "":
        return None
    if not isinstance(body, str):
        return Stray(f"field 'body': {_kind(body)}, must be a string", task)
    encoding = properties.get("body_encoding")
    if encoding is None or (isinstance(encoding, str) and encoding.lower() == "utf-8"):
        return None
    codec = codecs.get(encoding) if isinstance(encoding, str) else None
    if codec is None:
        return Stray(
            f"field 'properties.body_encoding': {str(encoding)[:40]!r} is not one of "
            f"{', '.join(sorted({*codecs, 'utf-8'}))}",
            task,
        )
    try:
        codec.decode(body)
    except Exception as exc:  # whatever the codec raises, kombu would raise too
        return Stray(f"field 'body': not valid {encoding}: {exc}", task)
    return None

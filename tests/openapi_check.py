"""The ingest API's OpenAPI document, and a check of one real response against it: the status
is documented for the route, required headers are there, and a JSON body validates against the
documented schema (JSON Schema 2020-12, as OpenAPI 3.1 uses)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from tests.helpers import ROOT

SPEC_PATH = ROOT / "worker" / "api" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """``schema`` with the document's components beside it, so its ``#/components`` refs resolve."""
    return Draft202012Validator(
        {"components": SPEC["components"], "allOf": [schema]},
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def check_response(
    method: str, path: str, status: int, headers: Mapping[str, str], body: bytes
) -> None:
    """Fail unless the response is one the document describes for ``method path``."""
    operation = SPEC["paths"][path][method.lower()]
    documented = operation["responses"]
    assert str(status) in documented, f"{method} {path}: {status} is not documented"
    response = resolve(documented[str(status)])
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, header in response.get("headers", {}).items():
        if header.get("required"):
            assert name.lower() in lowered, f"{method} {path} {status}: no {name} header"
            validator(header["schema"]).validate(lowered[name.lower()])
    media = lowered.get("content-type", "").split(";")[0].strip()
    assert media in response["content"], f"{method} {path} {status}: {media} not documented"
    if media.endswith("json"):
        validator(response["content"][media]["schema"]).validate(json.loads(body))

"""JSON Schemas (draft 2020-12) of what a run writes, shipped inside the package.

One schema per line type (``record``, ``cluster``, ``error``) and one for ``summary.json``, so
consumers can validate an export, and the tests can hold the code to the README's promises.
Line schemas are closed at the top level (a new key is a schema change, made on purpose);
the summary is open, because it gains optional keys as features arrive.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Final

import orjson

SCHEMA_NAMES: Final = ("record", "cluster", "error", "summary")

#: Which schema describes each output: the JSONL files line by line, the summary whole.
SCHEMA_FOR_OUTPUT: Final = {
    "records": "record",
    "clusters": "cluster",
    "errors": "error",
    "summary": "summary",
}


def schema_filename(name: str) -> str:
    return f"{name}.schema.json"


def load_schema(name: str) -> dict[str, Any]:
    """The schema ``name`` (one of :data:`SCHEMA_NAMES`) as a fresh dict."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    data = resources.files(__name__).joinpath(schema_filename(name)).read_bytes()
    schema: dict[str, Any] = orjson.loads(data)
    return schema

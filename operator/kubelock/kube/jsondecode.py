"""Decoding the API server's JSON: with orjson when it is installed (the operator's extra installs
it), the standard library's otherwise.

A restarted operator parses every claim and lock of its namespaces before it decides anything; with
10 000 of each, the standard library's decoder took 1.3–1.6 s of the start's CPU, orjson about a
quarter of that. The SDK and the CLI parse a few objects at a time and need not have it.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - depends on the installation
    orjson = None  # type: ignore[assignment]


def loads(data: bytes | str) -> Any:
    """Raises ValueError on malformed JSON, with either decoder."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)

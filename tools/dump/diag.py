"""CBOR diagnostic notation (RFC 8949 section 8) of decoded CBOR values."""

from __future__ import annotations

import json
import math
from typing import Any


def diag(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(diag(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{diag(k)}: {diag(v)}" for k, v in value.items()) + "}"
    tag, inner = getattr(value, "tag", None), getattr(value, "value", None)
    if isinstance(tag, int):
        return f"{tag}({diag(inner)})"
    return repr(value)

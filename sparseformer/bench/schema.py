"""The JSON schema of ``results.json`` (a Python dict) and a small validator for the subset of
JSON Schema it uses: ``type`` (one name or a list), ``properties``, ``required``,
``additionalProperties`` (bool), ``items``, ``enum``, ``minimum``, ``maximum``."""

from __future__ import annotations

SCHEMA_VERSION = 1

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR = {"type": "string"}
_TIMES = {
    "type": "object",
    "required": ["median", "spread", "all"],
    "additionalProperties": False,
    "properties": {
        "median": {"type": "number", "minimum": 0},
        "spread": {"type": "number", "minimum": 0},
        "all": {"type": "array", "items": {"type": "number", "minimum": 0}},
    },
}
_MEASUREMENT = {
    "type": "object",
    "required": [
        "strategy",
        "block_size",
        "seq_len",
        "code",
        "latency_ms",
        "attention_ms",
        "peak_mib",
        "attention_flops",
        "density",
        "block_density",
        "quality_cosine",
    ],  # fmt: skip
    "additionalProperties": False,
    "properties": {
        "strategy": _STR,
        "block_size": {"type": ["integer", "null"], "minimum": 1},
        "seq_len": {"type": "integer", "minimum": 1},
        "code": _STR,
        "latency_ms": _TIMES,
        "attention_ms": _TIMES,
        "peak_mib": {"type": ["number", "null"], "minimum": 0},
        "attention_flops": {"type": "number", "minimum": 0},
        "density": {"type": "number", "minimum": 0, "maximum": 1},
        "block_density": {"type": "number", "minimum": 0, "maximum": 1},
        "quality_cosine": {"type": "number", "minimum": -1.0000001, "maximum": 1.0000001},
    },
}
_MODEL_QUALITY = {
    "type": "object",
    "required": ["available", "reason", "results"],
    "properties": {
        "available": {"type": "boolean"},
        "reason": _STR,
        "model": _STR,
        "seq_len": {"type": "integer"},
        "texts": {"type": "integer"},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["strategy", "block_size", "embedding_cosine"],
                "properties": {
                    "strategy": _STR,
                    "block_size": {"type": ["integer", "null"]},
                    "embedding_cosine": {"type": "number", "minimum": -1.0000001, "maximum": 1.0000001},
                },
            },
        },
    },
}
_CHOICE = {  # one length's choice (sparseformer.bench.recommend)
    "strategy": _STR,
    "block_size": {"type": ["integer", "null"]},
    "latency_ms": _NUM,
    "dense_ms": _NUM_OR_NULL,
    "peak_mib": _NUM_OR_NULL,
    "quality_cosine": _NUM,
    "quality_measured_at": {"type": "integer", "minimum": 1},
}
_RECOMMENDATION = {
    "type": "object",
    "required": ["found", "message", "seq_len"],
    "properties": {
        "found": {"type": "boolean"},
        "message": _STR,
        "seq_len": {"type": ["integer", "null"]},
        **_CHOICE,
        "code": _STR,
        "sparsify_code": _STR,
        "quality_source": _STR,
        "constraints": {"type": "object"},
        "relax": {"type": "array", "items": _STR},
        "floor": _NUM,
        "per_length": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["seq_len", *_CHOICE],
                "additionalProperties": False,
                "properties": {"seq_len": {"type": "integer", "minimum": 1}, **_CHOICE},
            },
        },
        "break_even": {"type": ["integer", "null"]},
        "break_even_message": _STR,
    },
}

RESULTS_SCHEMA: dict = {
    "type": "object",
    "required": [
        "schema_version",
        "complete",
        "interrupted",
        "started_utc",
        "elapsed_s",
        "command",
        "machine",
        "versions",
        "workload",
        "settings",
        "measurements",
        "stopped_because",
        "model_quality",
        "recommendation",
    ],  # fmt: skip
    "properties": {
        "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "complete": {"type": "boolean"},
        "interrupted": {"type": "boolean"},
        "started_utc": _STR,
        "elapsed_s": {"type": "number", "minimum": 0},
        "command": {"type": "array", "items": _STR},
        "machine": {"type": "object", "required": ["platform", "machine", "cpu_count", "torch_threads", "device"]},
        "versions": {"type": "object", "required": ["python", "torch", "sparseformer"]},
        "workload": {"type": "object", "required": ["layers", "heads", "head_dim", "hidden", "batch", "dtype"]},
        "settings": {"type": "object", "required": ["block_sizes", "repeats", "warmup", "memory_method"]},
        "measurements": {"type": "array", "items": _MEASUREMENT},
        "stopped_because": _STR,
        "model_quality": {"type": ["object", "null"], **{k: v for k, v in _MODEL_QUALITY.items() if k != "type"}},
        "recommendation": {"type": ["object", "null"], **{k: v for k, v in _RECOMMENDATION.items() if k != "type"}},
        "notes": {"type": "array", "items": _STR},
    },
}

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is(value: object, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # no NaN
    return isinstance(value, _TYPES[name])


def errors(value: object, schema: dict, path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema``, as ``"path: what"`` lines (empty when valid)."""
    out: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            return [f"{path}: expected {' or '.join(kinds)}, got {type(value).__name__} {value!r:.60}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: expected one of {schema['enum']}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{path}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{path}: missing required key {key!r}")
        for key, item in value.items():
            if key in props:
                out += errors(item, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties", True) is False:
                out.append(f"{path}: unexpected key {key!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += errors(item, schema["items"], f"{path}[{i}]")
    return out


def validate(results: dict) -> None:
    """Raise ``ValueError`` listing every way ``results`` breaks :data:`RESULTS_SCHEMA`."""
    found = errors(results, RESULTS_SCHEMA)
    if found:
        raise ValueError("results do not match the schema:\n" + "\n".join(found[:20]))

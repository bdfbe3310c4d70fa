"""Reading operator files (YAML or JSON) with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from enforcer.errors import ConfigError


def read_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    try:
        if path.suffix == ".json":
            return json.loads(text)
        # safe_load: operator files never construct Python objects.
        return yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {e}") from e


def describe_validation_error(path: Path, err: ValidationError) -> ConfigError:
    """One ConfigError naming file, field path and reason for each problem."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{path}: field '{loc}': {e['msg']}")
    return ConfigError("\n".join(parts))

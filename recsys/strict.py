"""What every settings model shares: a key it does not know is refused (a misspelt ``factor: 32`` must fail, not
train with the default), a list may be given as one comma-separated string (a flag's value), and a refusal reads
as one line naming each key and where it was set (the CLI and the jobs print only the first line of an error).

Kept free of everything but pydantic and yaml: every settings module, the API's included, builds on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

ENV_PREFIX = "RECSYS_"               # of every variable that sets a key (``RECSYS_SERVE__PORT``)


class StrictModel(BaseModel):
    """A settings section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def split_commas(value: Any) -> Any:
    """``"a, b,"`` -> ``["a", "b"]``; anything but a string passes through to the list validation."""
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


CommaList = Annotated[list[str], BeforeValidator(split_commas)]

Location = tuple[int | str, ...]


class ConfigError(ValueError):
    """Settings that do not validate; the message is one line."""


def config_error(error: ValidationError, where: Callable[[Location], str | None] = lambda loc: None) -> ConfigError:
    """``error`` as one line: each refused key as a dotted path, why, and ``where(loc)`` set it when known."""
    reasons = []
    for problem in error.errors():
        loc = tuple(problem["loc"])
        source = where(loc)
        key = ".".join(map(str, loc)) or "(top level)"
        reasons.append(f"{key}{f' (from {source})' if source else ''}: {_reason(problem)}")
    return ConfigError(f"invalid config: {'; '.join(reasons)}")


def _reason(problem: dict[str, Any]) -> str:
    if problem["type"] == "extra_forbidden":
        return "unknown key"
    message = problem["msg"].removeprefix("Value error, ")
    given = problem.get("input")
    return f"{message}, got {given!r}" if isinstance(given, str | int | float | bool) else message


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The mapping a YAML settings file holds (empty file: ``{}``); ``what`` names the file in errors."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a mapping at top level")
    return data

"""Typed settings of the quality gates, read from ``conf/quality.yaml``.

Kept free of Great Expectations and Spark imports so ``recsys.config`` can embed it cheaply. Severity and
``mostly`` resolve from the most specific level that sets them: expectation > table > layer > global.
Thresholds that another step already owns are not repeated here: the timestamp range comes from
``settings.ingest`` (the rule that quarantines), list lengths from ``settings.publish`` (K, spare).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from recsys.constants import LAYERS
from recsys.strict import StrictModel, config_error, read_yaml_mapping

Severity = Literal["error", "warn"]
Layer = Literal[LAYERS]   # type: ignore[valid-type]  (the tuple's values, as Literal[...] spelled out)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_QUALITY_CONFIG = REPO_ROOT / "conf" / "quality.yaml"


class ExpectationRule(StrictModel):
    severity: Severity | None = None
    mostly: float | None = Field(None, gt=0.0, le=1.0)   # only for row-wise (map) expectations


class TableRules(StrictModel):
    severity: Severity | None = None
    expectations: dict[str, ExpectationRule] = Field(default_factory=dict)


class LayerRules(StrictModel):
    severity: Severity | None = None
    tables: dict[str, TableRules] = Field(default_factory=dict)


class QualitySettings(StrictModel):
    """Thresholds and per-expectation severities of the four gates (see conf/quality.yaml)."""

    severity: Severity = "error"
    max_quarantine_rate: float = Field(0.05, ge=0.0, le=1.0)   # per raw file; above it the format changed
    sample_rows: int = Field(5, ge=1, le=200)          # offending rows kept per failed expectation
    quality_dir: Path | None = None                    # GX project + Data Docs; default <warehouse>/_quality
    layers: dict[Layer, LayerRules] = Field(default_factory=dict)

    def rule(self, layer: str, table: str, expectation: str) -> tuple[Severity, float | None]:
        """Severity and ``mostly`` for one expectation, most specific level first."""
        layer_rules = self.layers.get(layer) or LayerRules()   # type: ignore[call-overload]
        table_rules = layer_rules.tables.get(table) or TableRules()
        rule = table_rules.expectations.get(expectation) or ExpectationRule()
        severity = rule.severity or table_rules.severity or layer_rules.severity or self.severity
        return severity, rule.mostly

    def configured_rules(self, layer: str) -> dict[str, set[str]]:
        """Table → expectation names named in the config for ``layer`` (to refuse unknown names)."""
        layer_rules = self.layers.get(layer) or LayerRules()   # type: ignore[call-overload]
        return {table: set(rules.expectations) for table, rules in layer_rules.tables.items()}

    def quality_root(self, warehouse: Path | str) -> Path:
        """Folder for the GX project and Data Docs: beside the tables, its name starting with ``_``."""
        root = self.quality_dir or Path(warehouse) / "_quality"
        return root.resolve()


def quality_config_path(path: Path | str | None = None) -> Path:
    """``path``, else ``$RECSYS_QUALITY_CONFIG``, else ``conf/quality.yaml``."""
    return Path(path or os.environ.get("RECSYS_QUALITY_CONFIG", DEFAULT_QUALITY_CONFIG))


def read_quality_config(path: Path | str | None = None) -> dict[str, Any]:
    """The raw mapping of :func:`quality_config_path`."""
    return read_yaml_mapping(quality_config_path(path), "quality config")


def load_quality_settings(path: Path | str | None = None, **overrides: Any) -> QualitySettings:
    """Settings from ``path`` (default ``$RECSYS_QUALITY_CONFIG`` or ``conf/quality.yaml``) + ``overrides``."""
    given = {k: v for k, v in overrides.items() if v is not None}
    data = {**read_quality_config(path), **given}
    try:
        return QualitySettings(**data)
    except ValidationError as exc:
        source = str(quality_config_path(path))
        raise config_error(exc, lambda loc: "arguments" if loc and loc[0] in given else source) from None

"""Typed configuration: ``conf/default.yaml`` + ``RECSYS_*`` environment overrides, validated at start.

Load once with :func:`load_settings` and pass the object down; no module reads the environment itself.
Override precedence (highest first): explicit keyword overrides, ``RECSYS_*`` env variables
(nested keys with ``__``, e.g. ``RECSYS_SPARK__SHUFFLE_PARTITIONS=64``), the YAML file named by
``RECSYS_CONFIG`` (default ``conf/default.yaml``), the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from recsys.catalog.settings import DeletionSettings
from recsys.constants import ITEM_EVENT_TYPES
from recsys.lock import LockSettings
from recsys.monitor.settings import MonitorSettings
from recsys.quality.settings import QualitySettings, read_quality_config
from recsys.serve.settings import ServeSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "conf" / "default.yaml"


class SparkSettings(BaseModel):
    master: str = "local[*]"
    app_name: str = "recsys"
    driver_memory: str = "6g"
    shuffle_partitions: int = Field(8, ge=1)
    jars_dir: Path = Path(".venv/delta-jars")
    ui_enabled: bool = False
    console_progress: bool = True
    log_level: str = "WARN"
    checkpoint_dir: Path = Path("./.spark-checkpoints")
    extra: dict[str, str] = Field(default_factory=dict)


class IngestSettings(BaseModel):
    min_timestamp_ms: int = 631_152_000_000
    max_future_ms: int = Field(86_400_000, ge=0)
    max_batch_bytes: int = Field(4 << 30, ge=1)


class ConfidenceSettings(BaseModel):
    """Hu–Koren–Volinsky confidence c = 1 + alpha·w, with the interaction strength
    w = (base_weight + rating_weight·(rating/5)^rating_power + verified_weight·verified
         + helpful_weight·log1p(helpful_vote) + Σ event weights) · 0.5^(age_days / half_life_days),
         age measured from the newest interaction.

    ``event_weights``: per API event type naming an item (a click opens the item's page, so it is the "view"),
    added once per event of that (user, item) in ``ops/events``; view < add_to_cart < purchase."""

    alpha: float = Field(10.0, ge=0)
    base_weight: float = Field(0.0, ge=0)          # 1 with every other weight 0: each interaction counts 1
    rating_weight: float = Field(1.0, ge=0)
    rating_power: float = Field(1.0, gt=0)         # > 1 makes low stars count for little: (4/5)^4 = 0.41
    verified_weight: float = Field(0.2, ge=0)
    helpful_weight: float = Field(0.1, ge=0)
    half_life_days: float | None = Field(730.0, ge=0)   # 0 or None: no recency decay
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 0.2, "add_to_cart": 0.5, "purchase": 1.0})

    @field_validator("event_weights")
    @classmethod
    def _item_events_only(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - ITEM_EVENT_TYPES)
        if unknown:
            raise ValueError(f"event_weights keys must be API event types naming an item "
                             f"({', '.join(sorted(ITEM_EVENT_TYPES))}); not {', '.join(unknown)}")
        if any(w < 0 for w in value.values()):
            raise ValueError("event_weights must be >= 0")
        return value


SPLIT_STRATEGIES = ("official", "temporal", "leave_last_out", "random")   # recsys.features; the DAGs' choices


class SplitSettings(BaseModel):
    """How gold/interactions is labelled train/valid/test (see recsys.features)."""

    strategy: str = Field("official", pattern=f"^({'|'.join(SPLIT_STRATEGIES)})$")
    valid_cut_ms: int = 1628643414042     # official Amazon Reviews 2023 cut points
    test_cut_ms: int = 1658002729837
    fallback_quantiles: tuple[float, float] = (0.8, 0.9)   # time quantiles: `temporal`'s cuts, `official`'s fallback
    holdout: int = Field(1, ge=1)         # leave_last_out: the last `holdout` interactions of a user → test
    random_test_fraction: float = Field(0.2, gt=0, lt=1)
    random_valid_fraction: float = Field(0.1, ge=0, lt=1)
    kcore: int = Field(0, ge=0)           # 0: no k-core filter; 5: the official 5-core
    seed: int = 42


class FeatureSettings(BaseModel):
    confidence: ConfidenceSettings = Field(default_factory=ConfidenceSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)


class TrainSettings(BaseModel):
    """Which models a run trains and with which hyper-parameters (one shared space for both ALS)."""

    models: list[str] = Field(default_factory=lambda: ["spark_als", "implicit_als", "popularity", "content"])
    params: dict[str, dict[str, Any]] = Field(default_factory=lambda: {
        "spark_als": {"factors": 16, "regularization": 0.05, "alpha": 10.0, "iterations": 15},
        "implicit_als": {"factors": 16, "regularization": 0.05, "alpha": 10.0, "iterations": 15},
        "popularity": {},
        "content": {"dims": 64},
    })
    fit_splits: list[str] = Field(default_factory=lambda: ["train", "valid"])   # evaluated on "test"

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        return [m.strip() for m in value.split(",") if m.strip()] if isinstance(value, str) else value


class EvaluateSettings(BaseModel):
    ks: list[int] = Field(default_factory=lambda: [10, 20])
    curve_max_k: int = Field(100, ge=1)        # MAP@K and recall@K curves over K = 1..curve_max_k in the report
    primary_metric: str = "map@10"            # what promotion compares
    promotion_tolerance: float = Field(0.0, ge=0)   # a candidate may be this much (absolute) worse than production


class PublishSettings(BaseModel):
    k: int = Field(20, ge=1)                   # list length served
    spare: int = Field(10, ge=0)               # extra candidates kept per user to backfill after item deletions
    similar_k: int = Field(20, ge=1)
    popular_k: int = Field(100, ge=1)
    refit_on_all: bool = True                  # refit the promoted model on train+valid+test before publishing
    keep_versions: int = Field(3, ge=1)        # published versions kept in gold/recs_* (older rows are removed)
    unswitched_grace_hours: float = Field(48.0, gt=0)   # a version written but never switched is kept this long
    rewrite_share: float = Field(0.5, ge=0, le=1)  # a deletion changes more user lists than this: rewrite, not MERGE


class SynthSettings(BaseModel):
    users: int = Field(2000, ge=1)
    items: int = Field(300, ge=1)
    reviews: int = Field(12000, ge=1)
    categories: list[str] = Field(default_factory=lambda: ["Appliances", "All_Beauty", "Toys_and_Games"])
    clusters: int = Field(8, ge=1)
    seed: int = 42
    affinity: float = Field(0.8, ge=0, le=1)       # share of a user's reviews inside their own cluster
    repeat_rate: float = Field(0.015, ge=0, le=1)  # share of reviews that repeat an earlier (user, item) pair
    chunk_size: int = Field(100_000, ge=1)         # reviews generated per vectorised chunk (output depends on it)
    bad_line_rate: float = Field(0.0, ge=0, lt=1)  # share of review lines broken on purpose (quarantine demos)

    @field_validator("categories", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        return [c.strip() for c in value.split(",") if c.strip()] if isinstance(value, str) else value


class Settings(BaseSettings):
    """Everything a job needs to know, in one validated object."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", env_nested_delimiter="__", extra="ignore")

    warehouse: Path = Path("./warehouse")
    source: Path = Path("./data/synthetic")
    reports: Path = Path("./reports")
    spark: SparkSettings = Field(default_factory=SparkSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    synth: SynthSettings = Field(default_factory=SynthSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    deletions: DeletionSettings = Field(default_factory=DeletionSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)   # from conf/quality.yaml (see _YamlSource)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)   # events, indicators, A/B experiment
    lock: LockSettings = Field(default_factory=LockSettings)            # one writer at a time per warehouse

    @field_validator("warehouse")
    @classmethod
    def _resolved_warehouse(cls, value: Path) -> Path:
        """Absolute, symlinks followed, once (every CLI command and job loads settings here): table paths are
        compared below it (``recsys.catalog``), and ``./warehouse`` or a symlink would not match them."""
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``RECSYS_CONFIG`` (default ``conf/default.yaml``), and the quality gates'
    ``conf/quality.yaml`` (``RECSYS_QUALITY_CONFIG``) as its ``quality`` section unless it has one."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused, __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = Path(os.environ.get("RECSYS_CONFIG", DEFAULT_CONFIG))
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping at top level")
        data.setdefault("quality", read_quality_config())   # the gates keep their own file; env still overrides
        return data


def load_settings(**overrides: Any) -> Settings:
    """Settings from YAML + env, with ``overrides`` (e.g. from CLI flags) winning; ``None`` values are ignored."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})

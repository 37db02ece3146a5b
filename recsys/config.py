"""Typed configuration: ``conf/default.yaml`` + ``RECSYS_*`` environment overrides, validated at start.

Load once with :func:`load_settings` and pass the object down; no module reads the environment itself.
Override precedence (highest first): explicit keyword overrides, ``RECSYS_*`` env variables
(nested keys with ``__``, e.g. ``RECSYS_SPARK__SHUFFLE_PARTITIONS=64``), the YAML file named by
``RECSYS_CONFIG`` (default ``conf/default.yaml``), the defaults below.

Every section refuses keys it does not know, wherever they come from: a misspelt key in the YAML, in the keyword
overrides or in a ``RECSYS_<SECTION>__<KEY>`` variable fails the load with one line naming the key and its source.
A variable with ``__`` must start with a section's name; one without (``RECSYS_CONFIG``, ``RECSYS_DEBUG``, a test's
knob) sets a top-level key if it names one and is otherwise not ours to judge.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from recsys.catalog.settings import DeletionSettings
from recsys.constants import (ITEM_EVENT_TYPES, MODELS, OFFICIAL_TEST_CUT_MS, OFFICIAL_VALID_CUT_MS, SESSION_MODELS,
                              SPLIT_STRATEGIES)
from recsys.lock import LockSettings
from recsys.models.params import ModelParams
from recsys.monitor.settings import MonitorSettings
from recsys.quality.settings import QualitySettings, quality_config_path, read_quality_config
from recsys.retrieval.settings import RetrievalSettings
from recsys.selection.settings import TuningSettings
from recsys.serve.settings import ServeSettings
from recsys.sessions.settings import SessionSettings
from recsys.strict import (ENV_PREFIX, CommaList, ConfigError, Location, StrictModel, config_error,
                           read_yaml_mapping)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "conf" / "default.yaml"


class SparkSettings(StrictModel):
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


class IngestSettings(StrictModel):
    min_timestamp_ms: int = 631_152_000_000
    max_future_ms: int = Field(86_400_000, ge=0)
    max_batch_bytes: int = Field(4 << 30, ge=1)


class ConfidenceSettings(StrictModel):
    """Hu–Koren–Volinsky confidence c = 1 + alpha·w, with the interaction strength
    w = (base_weight + rating_weight·(rating/5)^rating_power + verified_weight·verified
         + helpful_weight·log1p(helpful_vote) + Σ event weights) · 0.5^(age_days / half_life_days),
         age measured from the newest interaction.

    ``event_weights``: per API event type naming an item (a click opens the item's page, so it is the "view"),
    added once per event type of that (user, item) in ``ops/events`` (repeats add nothing: events lift a pair by at
    most Σ event_weights); view < add_to_cart < purchase."""

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


class SplitSettings(StrictModel):
    """How gold/interactions is labelled train/valid/test (see recsys.features)."""

    strategy: str = Field("official", pattern=f"^({'|'.join(SPLIT_STRATEGIES)})$")
    valid_cut_ms: int = OFFICIAL_VALID_CUT_MS
    test_cut_ms: int = OFFICIAL_TEST_CUT_MS
    fallback_quantiles: tuple[float, float] = (0.8, 0.9)   # time quantiles: `temporal`'s cuts, `official`'s fallback
    holdout: int = Field(1, ge=1)         # leave_last_out: a user's last `holdout` → test, the `holdout` before → valid
    random_test_fraction: float = Field(0.2, gt=0, lt=1)
    random_valid_fraction: float = Field(0.1, ge=0, lt=1)
    kcore: int = Field(0, ge=0)           # 0: no k-core filter; 5: the official 5-core
    seed: int = 42


class FeatureSettings(StrictModel):
    confidence: ConfidenceSettings = Field(default_factory=ConfidenceSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)


class TrainSettings(StrictModel):
    """Which models a run trains and with which hyper-parameters (one shared space for both ALS)."""

    # every model but the session models (recsys.sessions), which a run trains when asked
    models: CommaList = Field(default_factory=lambda: [m for m in MODELS if m not in SESSION_MODELS])
    params: ModelParams = Field(default_factory=ModelParams)
    fit_splits: list[str] = Field(default_factory=lambda: ["train", "valid"])   # evaluated on "test"

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        unknown = [model for model in value if model not in MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(sorted(MODELS))}")
        return value


class EvaluateSettings(StrictModel):
    ks: list[int] = Field(default_factory=lambda: [10, 20])
    curve_max_k: int = Field(100, ge=1)        # MAP@K and recall@K curves over K = 1..curve_max_k in the report
    primary_metric: str = "map@10"            # what promotion compares
    promotion_tolerance: float = Field(0.0, ge=0)   # a candidate may be this much (absolute) worse than production


class PublishSettings(StrictModel):
    k: int = Field(20, ge=1)                   # list length served
    spare: int = Field(10, ge=0)               # extra candidates kept per user to backfill after item deletions
    similar_k: int = Field(20, ge=1)
    popular_k: int = Field(100, ge=1)
    refit_on_all: bool = True                  # refit the promoted model on train+valid+test before publishing
    keep_versions: int = Field(3, ge=1)        # published versions kept in gold/recs_* (older rows are removed)
    unswitched_grace_hours: float = Field(48.0, gt=0)   # a version written but never switched is kept this long
    # A deletion changes more user lists than this: rewrite, not MERGE. Changed lists are spread over every file, so
    # a MERGE of even ~1% rewrites the whole table anyway, after a join (bench_deletions, 1.8M users: 158 s to
    # MERGE under 1% of the lists vs 59 s to rewrite with 99% changed).
    rewrite_share: float = Field(0.01, ge=0, le=1)
    # The multi-stage model's diversity re-rank strength at publish (0 = the ranker's order); None: the strength it
    # chose on its labelled users (the largest that loses ≤ 2 % MAP@10 there, recsys.multistage.diversity).
    diversity: float | None = Field(None, ge=0, lt=1)


class SynthSettings(StrictModel):
    users: int = Field(2000, ge=1)
    items: int = Field(300, ge=1)
    reviews: int = Field(12000, ge=1)
    categories: CommaList = Field(default_factory=lambda: ["Appliances", "All_Beauty", "Toys_and_Games"])
    clusters: int = Field(8, ge=1)
    seed: int = 42
    affinity: float = Field(0.8, ge=0, le=1)       # share of a user's reviews inside their own cluster
    repeat_rate: float = Field(0.015, ge=0, le=1)  # share of reviews that repeat an earlier (user, item) pair
    chunk_size: int = Field(100_000, ge=1)         # reviews generated per vectorised chunk (output depends on it)
    bad_line_rate: float = Field(0.0, ge=0, lt=1)  # share of review lines broken on purpose (quarantine demos)
    sequential: bool = False                       # planted next-item chains (recsys.synth, for the session models)
    chain_length: int = Field(6, ge=2)             # items per chain
    chain_noise: float = Field(0.1, ge=0, le=1)    # share of steps that jump to a random item instead


class OrchestrationSettings(StrictModel):
    """Folders the Airflow DAGs' path params may name (:mod:`recsys.orchestration`): a param is resolved (symlinks
    and ``..`` followed) and must be one of its roots or under one, so a DAG run reads only what an operator put
    there. Empty: the configured folder alone (``source``; ``deletions.drops_dir``, else ``./data/drops``)."""

    source_roots: list[Path] = Field(default_factory=list)     # the training DAGs' ``source``
    drops_roots: list[Path] = Field(default_factory=list)      # the deletions DAG's ``drops``


class Settings(BaseSettings):
    """Everything a job needs to know, in one validated object."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    warehouse: Path = Path("./warehouse")
    source: Path = Path("./data/synthetic")
    reports: Path = Path("./reports")
    spark: SparkSettings = Field(default_factory=SparkSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    tuning: TuningSettings = Field(default_factory=TuningSettings)     # model selection (recsys.selection)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)   # ANN candidates (recsys.retrieval)
    sessions: SessionSettings = Field(default_factory=SessionSettings)   # item sequences (recsys.sessions)
    synth: SynthSettings = Field(default_factory=SynthSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    deletions: DeletionSettings = Field(default_factory=DeletionSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)   # from conf/quality.yaml (see _YamlSource)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)   # events, indicators, A/B experiment
    lock: LockSettings = Field(default_factory=LockSettings)            # one writer at a time per warehouse
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)   # DAG path params

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
        return (init_settings, _SectionEnvSource(settings_cls), _YamlSource(settings_cls))


class _SectionEnvSource(EnvSettingsSource):
    """``RECSYS_*`` variables, refusing a ``RECSYS_<NAME>__…`` whose ``<NAME>`` is no section: pydantic-settings
    reads only the variables that name a field, so a misspelt section would otherwise be skipped in silence."""

    def __call__(self) -> dict[str, Any]:
        named = {name: name[len(ENV_PREFIX):].split("__")[0].lower() for name in sorted(os.environ)
                 if name.upper().startswith(ENV_PREFIX) and "__" in name}
        unknown = [f"{section} (from {name}): unknown key" for name, section in named.items()
                   if section not in self.settings_cls.model_fields]
        if unknown:
            raise ConfigError(f"invalid config: {'; '.join(unknown)}")
        return super().__call__()


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``RECSYS_CONFIG`` (default ``conf/default.yaml``), and the quality gates'
    ``conf/quality.yaml`` (``RECSYS_QUALITY_CONFIG``) as its ``quality`` section unless it has one."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused, __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data = read_config()
        data.setdefault("quality", read_quality_config())   # the gates keep their own file; env still overrides
        return data


def config_path() -> Path:
    """The YAML file settings are read from: ``$RECSYS_CONFIG``, else ``conf/default.yaml``."""
    return Path(os.environ.get("RECSYS_CONFIG", DEFAULT_CONFIG))


def read_config() -> dict[str, Any]:
    """The raw mapping of :func:`config_path`."""
    return read_yaml_mapping(config_path(), "config file")


def load_settings(**overrides: Any) -> Settings:
    """Settings from YAML + env, with ``overrides`` (e.g. from CLI flags) winning; ``None`` values are ignored.

    Raises :class:`~recsys.strict.ConfigError` (one line: each bad key, why, and which source set it)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise config_error(exc, lambda loc: _source_of(loc, given)) from None


def _source_of(loc: Location, overrides: dict[str, Any]) -> str | None:
    """Which source set the key at ``loc``, highest precedence first: the overrides, a ``RECSYS_*`` variable
    (the key's own or a section's given as JSON), the YAML file, the quality gates' file."""
    if _holds(overrides, loc):
        return "arguments"
    variables = {name.upper(): name for name in os.environ}
    for depth in range(len(loc), 0, -1):
        name = ENV_PREFIX + "__".join(map(str, loc[:depth])).upper()
        if name in variables:
            return variables[name]
    data = read_config()
    if _holds(data, loc):
        return str(config_path())
    if loc[:1] == ("quality",) and "quality" not in data:
        return str(quality_config_path())
    return None


def _holds(data: Any, loc: Location) -> bool:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return False
    return True

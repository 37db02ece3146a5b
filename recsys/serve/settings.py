"""Settings of the serving process (the ``serve`` section; to move into ``recsys.config`` later).

Paths left at ``None`` are derived from the warehouse, so ``recsys serve --warehouse DIR`` and the jobs that fold
events into ``ops/events`` agree on where things are without extra flags. Folders whose names start with ``_`` are
ignored by Delta readers, so they can live beside the tables.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, IPvAnyNetwork, SecretStr, field_serializer, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys.serve.experiment import ABSettings
from recsys.strict import ENV_PREFIX, StrictModel

SERVING_DIR = "_serving"


class ServeSettings(StrictModel):
    """How the API process serves: bind address, gunicorn shape, limits, reload cadence, local folders."""

    host: str = "127.0.0.1"                     # 0.0.0.0 inside a container
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(2, ge=1)               # gevent workers (recsys.serve.worker); one per core
    connections: int = Field(1000, ge=1)        # open connections per worker (stalled ones included)
    request_timeout_s: float = Field(10.0, gt=0)   # to receive a request's body and answer it; else 408
    max_k: int = Field(100, ge=1)
    default_k: int = Field(10, ge=1)
    max_exclude: int = Field(100, ge=0)         # asins accepted in ?exclude= (and a session's "exclude")
    max_session_items: int = Field(200, ge=1)   # items a POST /v1/sessions/recommendations may name, and the
                                                # recent items the ledger keeps per user (the last ones by time)
    # The user route blends in the user's session (recsys.serve.blend): the item events of the last session_window_s
    # seconds, scored by the snapshot's session scorer, given this share of the list's slots (0 = off: no recent
    # items recorded, no read, today's answer exactly).
    session_window_s: float = Field(3600.0, gt=0)
    session_blend: float = Field(0.5, ge=0.0, le=1.0)
    max_event_batch: int = Field(100, ge=1)     # events accepted in one POST /v1/events
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    reload_interval_s: float = Field(2.0, ge=0.0)   # 0 = check ops/published and ops/deletions on every request
    build_in_subprocess: bool = True            # keeps the build's peak memory out of the worker's RSS
    keep_snapshots: int = Field(1, ge=1)        # snapshot folders kept on disk (old ones may hold erased users)
    access_log: bool = True                     # one key=value line per request (no ids: paths hold user ids)
    snapshot_dir: Path | None = None            # default <warehouse>/_serving/snapshots
    events_dir: Path | None = None              # default <warehouse>/_serving/events
    # Trusted events (recsys.serve.admission). Keys: the first signs, all verify; set them with
    # RECSYS_SERVE__SIGNING_KEYS='["new","old"]' rather than in a file. None set: recsys serve makes one per start.
    signing_keys: list[SecretStr] = Field(default_factory=list)
    event_window_s: float = Field(86400.0, gt=0)    # events are taken this long after their list was served
    events_per_s: float = Field(10.0, gt=0)     # per client (recsys.serve.clients): events refilled per second ...
    events_burst: int = Field(200, ge=1)        # ... up to this many at once (>= max_event_batch)
    events_max_bytes: int = Field(1 << 30, ge=1)   # disk quota of events_dir; full: 507 until compaction
    ledger_path: Path | None = None             # default <warehouse>/_serving/ledger.sqlite (one host: see docs/api.md)
    # Proxies (CIDRs) whose X-Forwarded-For names the client: behind one, every client's peer is the proxy.
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    metrics_token: SecretStr | None = None      # /metrics wants "Authorization: Bearer <token>"; None: loopback only

    @field_validator("signing_keys")
    @classmethod
    def _keys_long_enough(cls, keys: list[SecretStr]) -> list[SecretStr]:
        if any(len(key.get_secret_value()) < 16 for key in keys):
            raise ValueError("signing keys must be at least 16 characters")
        return keys

    @field_serializer("signing_keys", "metrics_token", when_used="json")
    def _reveal(self, value: list[SecretStr] | SecretStr | None) -> list[str] | str | None:
        """JSON is how ``recsys serve`` hands the settings to its workers (``RECSYS_SERVE``), secrets included."""
        if isinstance(value, list):
            return [key.get_secret_value() for key in value]
        return None if value is None else value.get_secret_value()

    @model_validator(mode="after")
    def _k_within_bounds(self) -> "ServeSettings":
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        if self.events_burst < self.max_event_batch:
            raise ValueError(f"events_burst ({self.events_burst}) must admit a full batch ({self.max_event_batch})")
        return self

    def resolved(self, warehouse: Path | str) -> "ServeSettings":
        """A copy whose folders are absolute, filled from ``warehouse`` where unset."""
        root = Path(warehouse).resolve()
        return self.model_copy(update={
            "snapshot_dir": (self.snapshot_dir or root / SERVING_DIR / "snapshots").resolve(),
            "events_dir": (self.events_dir or root / SERVING_DIR / "events").resolve(),
            "ledger_path": (self.ledger_path or root / SERVING_DIR / "ledger.sqlite").resolve(),
        })


class ServedMonitorSettings(StrictModel):
    """The part of the ``monitor`` section the API reads: the A/B experiment it assigns users with."""

    ab: ABSettings = Field(default_factory=ABSettings)


class ServeEnv(BaseSettings):
    """What a gunicorn worker reads from its environment: ``RECSYS_WAREHOUSE``, ``RECSYS_SERVE`` and
    ``RECSYS_MONITOR`` (JSON) or ``RECSYS_SERVE__<FIELD>``, the same keys ``recsys.config.Settings`` uses."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    warehouse: Path = Path("./warehouse")
    serve: ServeSettings = Field(default_factory=ServeSettings)
    monitor: ServedMonitorSettings = Field(default_factory=ServedMonitorSettings)   # RECSYS_MONITOR

"""Great Expectations 1.x plumbing: one file context per quality folder, one suite + validation definition +
checkpoint per table, Data Docs built once per gate.

Each table is validated in two passes, because GE fetches unexpected samples with one Spark job per
expectation even when nothing fails. Pass 1 runs the whole suite on the cached table with samples off, so
row-wise counts share one aggregation and queries only count. Pass 2 runs only if something failed: the
failed row-wise expectations again (suite ``<table>.samples``), on the uncached table, to fetch offending rows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from recsys.quality.suites import Check

SITE = "recsys"                            # the one Data Docs site: <quality root>/data_docs
DATASOURCE = "recsys_spark"
BATCH = "whole_table"
COUNTS_ONLY = {"result_format": "BASIC", "partial_unexpected_count": 0}   # no per-expectation sample jobs
WITH_ROWS = {"result_format": "COMPLETE", "include_unexpected_rows": True}   # GE caps rows at 200
_MAX_CELL = 120                            # long strings (review text, raw lines) are cut in samples
_SAMPLING = {"ExpectNoUnexpectedRows": "UnexpectedRowsExpectation"}      # pass 2: the stock, row-fetching class
# Columns whose values name a user (raw lines embed the user_id): never kept in a sample, so neither
# ops/quality_results, a gate's message nor a job log holds an id an erasure would have to find.
REDACTED_COLUMNS = frozenset({"user_id", "user_idx", "raw", "value"})   # "value": see redact_sample
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Planned:
    """A check with its resolved severity and ``mostly``."""

    check: Check
    severity: str
    mostly: float | None


@dataclass(frozen=True)
class Evaluated:
    """What GE said about one expectation, reduced to what results and messages need."""

    check: Check
    severity: str
    expectation_type: str
    success: bool
    observed: str | None
    unexpected_count: int | None
    sample: list[dict[str, Any]]
    row_wise: bool


@dataclass(frozen=True)
class TableRun:
    evaluated: list[Evaluated]
    result_ids: list[Any]                  # GE ValidationResultIdentifiers, for the Data Docs build


class GxRunner:
    """A GX file context under ``root`` (``root/gx``) with the Data Docs site at ``root/data_docs``."""

    def __init__(self, root: Path) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")   # GX 1.24 sends nothing; keep it that way
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        import recsys.quality.expectations  # noqa: F401  (registers ExpectColumnValuesToBeFinite)

        self.gx = gx
        self.root = root
        self.docs_index = root / "data_docs" / "index.html"
        root.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=str(root))
        if context.config.analytics_enabled is not False:
            context.enable_analytics(False)
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
        site = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(root / "data_docs")},
        }
        sites = context.get_site_names()
        for name in sites:
            if name != SITE:
                context.delete_data_docs_site(name)   # GX's default site would build a second copy
        if SITE in sites:
            context.update_data_docs_site(SITE, site)
        else:
            context.add_data_docs_site(SITE, site)
        # persist=False: we cache what we validate ourselves, and GX would never unpersist its copy.
        self.datasource = context.data_sources.add_or_update_spark(DATASOURCE, persist=False)
        self.context = context

    # -- declarations ---------------------------------------------------------------------------------------

    def _batch_definition(self, asset_name: str):
        try:
            asset = self.datasource.get_asset(asset_name)
        except LookupError:
            asset = self.datasource.add_dataframe_asset(asset_name)
        try:
            return asset.get_batch_definition(BATCH)
        except KeyError:
            return asset.add_batch_definition_whole_dataframe(BATCH)

    def _expectation(self, planned: Planned, layer: str, table: str, sampling: bool = False):
        name = planned.check.expectation
        cls = expectation_class(_SAMPLING.get(name, name) if sampling else name)
        kwargs = dict(planned.check.kwargs)
        if planned.mostly is not None:
            if "mostly" not in cls.__fields__:
                raise ValueError(f"conf/quality.yaml: {layer}/{table}/{planned.check.name} sets mostly, but "
                                 f"{cls.__name__} is not a row-wise expectation")
            kwargs["mostly"] = planned.mostly
        return cls(**kwargs, description=planned.check.description,
                   severity="critical" if planned.severity == "error" else "warning",
                   meta={"rule": planned.check.name, "layer": layer, "table": table, "severity": planned.severity})

    def _checkpoint(self, name: str, asset_name: str, expectations: list, result_format: dict):
        """Suite, validation definition and checkpoint ``name``, saved (replacing earlier definitions).

        No Data Docs action: each build compiles GE's templates anew (~2 s), so the gate builds once."""
        gx = self.gx
        suite = self.context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))
        definition = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=self._batch_definition(asset_name), suite=suite))
        return self.context.checkpoints.add_or_update(gx.Checkpoint(
            name=name, validation_definitions=[definition], result_format=result_format))

    # -- running --------------------------------------------------------------------------------------------

    def validate(self, layer: str, table: str, planned: list[Planned], cached, full, run_id: str,
                 run_time: datetime, sample_rows: int, batch: str | None = None) -> TableRun:
        """Pass 1 on ``cached`` (all checks, counts only), then pass 2 on ``full`` for failed row-wise checks.
        ``batch``: the name of a derived batch of ``table`` (its own GE asset and suite, ``<table>.<batch>``)."""
        from great_expectations.core.run_identifier import RunIdentifier

        asset_name = table.replace("/", ".") + (f".{batch}" if batch else "")
        expectations = [self._expectation(p, layer, table) for p in planned]
        checkpoint = self._checkpoint(asset_name, asset_name, expectations, COUNTS_ONLY)
        run = RunIdentifier(run_name=run_id, run_time=run_time)
        outcome = checkpoint.run(batch_parameters={"dataframe": cached}, run_id=run)
        result_ids = list(outcome.run_results)
        by_rule = {p.check.name: p for p in planned}
        evaluated = [_evaluate(by_rule[_rule(r)], r) for r in _results(outcome)]

        names = {e.check.name for e in evaluated if not e.success and e.row_wise and not _errored(e)}
        if names:
            retry = [self._expectation(p, layer, table, sampling=True) for p in planned if p.check.name in names]
            checkpoint = self._checkpoint(f"{asset_name}.samples", asset_name, retry, WITH_ROWS)
            outcome = checkpoint.run(batch_parameters={"dataframe": full}, run_id=run)
            result_ids += list(outcome.run_results)
            samples = {_rule(r): _samples(r, sample_rows) for r in _results(outcome)}
            evaluated = [_with_sample(e, samples.get(e.check.name)) for e in evaluated]
        return TableRun([_redacted(_cut(e, sample_rows)) for e in evaluated], result_ids)

    def build_docs(self, result_ids: list[Any]) -> Path:
        """Render this gate's validation results and refresh the index; returns the index page."""
        if result_ids:
            self.context.build_data_docs(site_names=[SITE], resource_identifiers=result_ids)
        return self.docs_index


_RUNNERS: dict[Path, GxRunner] = {}


def runner_for(root: Path) -> GxRunner:
    """The process-wide runner of a quality folder (a GX context costs ~0.4 s to open; reuse it)."""
    root = root.resolve()
    if root not in _RUNNERS:
        _RUNNERS[root] = GxRunner(root)
    return _RUNNERS[root]


def expectation_class(name: str):
    import great_expectations as gx

    from recsys.quality import expectations as ours

    cls = getattr(gx.expectations, name, None) or getattr(ours, name, None)
    if cls is None:
        raise ValueError(f"unknown expectation class {name}")
    return cls


# --- reading GE results ----------------------------------------------------------------------------------------

def _results(checkpoint_result) -> list:
    return [r for suite_result in checkpoint_result.run_results.values() for r in suite_result.results]


def _rule(result) -> str:
    return result.expectation_config.meta["rule"]


def _exception_message(info: Any) -> str | None:
    """GE nests exception info per metric; return the first message found."""
    if isinstance(info, dict):
        if info.get("raised_exception"):
            return str(info.get("exception_message") or "exception")
        for value in info.values():
            found = _exception_message(value)
            if found:
                return found
    return None


def _errored(e: Evaluated) -> bool:
    return bool(e.observed and e.observed.startswith("error:"))


def _evaluate(planned: Planned, result) -> Evaluated:
    from great_expectations.expectations.core.unexpected_rows_expectation import UnexpectedRowsExpectation

    is_query = issubclass(expectation_class(planned.check.expectation), UnexpectedRowsExpectation)
    res = dict(result.result or {})
    row_wise = is_query or "unexpected_count" in res    # of_type is a map expectation by class, not by result
    error = _exception_message(result.exception_info)
    unexpected: int | None = None
    sample: list[dict[str, Any]] = []
    if error:
        observed = f"error: {error.splitlines()[0][:300]}"
    elif is_query:
        unexpected = int(res.get("observed_value") or 0)
        observed = f"{unexpected} offending rows"
    elif row_wise:
        unexpected = int(res.get("unexpected_count") or 0)
        observed = f"{unexpected} of {res.get('element_count')} rows unexpected"
    else:
        expected = planned.check.kwargs.get("type_") or planned.check.kwargs.get("type_list")
        observed = f"observed {json.dumps(res.get('observed_value'), default=str)}"
        observed += f", expected {expected}" if expected else ""
        details = res.get("details")
        if details:
            sample = [_short(d) if isinstance(d, dict) else {"detail": d}
                      for d in (details.get("mismatched") or [details])]
    return Evaluated(planned.check, planned.severity, result.expectation_config.type, bool(result.success),
                     observed, unexpected, sample, row_wise)


def _samples(result, sample_rows: int) -> list[dict[str, Any]]:
    res = result.result or {}
    rows = res.get("unexpected_rows")
    if rows is None:
        rows = (res.get("details") or {}).get("unexpected_rows")
    if rows is None:
        rows = [{"value": v} for v in res.get("partial_unexpected_list") or []]
    if hasattr(rows, "to_dict"):          # pandas engines return a DataFrame
        rows = rows.to_dict("records")
    return [_short(dict(r.asDict() if hasattr(r, "asDict") else r)) for r in list(rows)[:sample_rows]]


def _short(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, str) and len(value) > _MAX_CELL:
            value = value[:_MAX_CELL] + "…"
        out[str(key)] = value
    return out


def _with_sample(e: Evaluated, sample: list[dict[str, Any]] | None) -> Evaluated:
    return replace(e, sample=sample) if sample else e


def redact_sample(sample: list[dict[str, Any]], column: str | None) -> list[dict[str, Any]]:
    """``sample`` with user-naming values replaced: columns of :data:`REDACTED_COLUMNS`, and ``value`` (a bare
    unexpected value) when the expectation is about such a column. A null stays null: it names no one, and says
    what was wrong (a missing ``user_id``)."""
    about_user = any(c.strip() in REDACTED_COLUMNS for c in (column or "").split(","))

    def hidden(key: str, value: Any) -> bool:
        return value is not None and key in REDACTED_COLUMNS and (key != "value" or about_user)

    return [{k: REDACTED if hidden(k, v) else v for k, v in row.items()} for row in sample]


def _redacted(e: Evaluated) -> Evaluated:
    return replace(e, sample=redact_sample(e.sample, e.check.column)) if e.sample else e


def _cut(e: Evaluated, rows: int) -> Evaluated:
    return replace(e, sample=e.sample[:rows]) if len(e.sample) > rows else e

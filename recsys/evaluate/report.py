"""The side-by-side comparison report of a run: ``metrics.json``, ``index.html`` and PNG plots, with the run's model
selection (:mod:`recsys.selection`) when it searched: the best trials per model, MAP@K on valid against the main
parameters, the time spent."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

# the parameters plotted against valid MAP@K, per model (log-scaled axes where the space is log-scaled)
PLOTTED = {"implicit_als": ("factors", "regularization", "alpha", "power"),
           "spark_als": ("factors", "regularization", "alpha", "power"),
           "content": ("dims", "min_df", "power")}
LOG_SCALED = {"factors", "regularization", "alpha", "dims"}
BEST_SHOWN = 5


def write_report(folder: Path, summary: dict, results: dict[str, dict], selection: dict | None = None) -> Path:
    """Write the report for one evaluated run into ``folder``; returns the HTML path. ``selection``: the run's
    model selection (``recsys.selection.step.selected``), empty or None when it searched nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(
        {**summary, "curves": {m: r["curves"] for m, r in results.items()}}, indent=2, default=str))
    models = sorted(results)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in models:
        ks = [row["k"] for row in results[m]["curves"]]
        axes[0].plot(ks, [row["map"] for row in results[m]["curves"]], label=m)
        axes[1].plot(ks, [row["recall"] for row in results[m]["curves"]], label=m)
    for ax, name in zip(axes, ("MAP@K", "Recall@K")):
        ax.set_xlabel("K")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "metrics_over_k.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].bar(models, [results[m]["train_seconds"] or 0 for m in models], color="#4c72b0")
    axes[0].set_title("training time (s)")
    axes[1].bar(models, [results[m]["metrics"].get("popularity_percentile@10", 0) for m in models], color="#dd8452")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("popularity bias: mean popularity percentile of top-10")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(folder / "training_time_and_popularity_bias.png", dpi=110)
    plt.close(fig)

    keys = sorted({k for m in models for k in results[m]["metrics"]})
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["model", "train s", *keys])
    rows = []
    for m in models:
        cells = [html.escape(m), f"{results[m]['train_seconds'] or 0:.2f}"]
        cells += [f"{results[m]['metrics'].get(k, float('nan')):.4f}" for k in keys]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    decision = html.escape(json.dumps(summary.get("decision"), default=str))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>run {html.escape(summary['run_id'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:right}}</style></head><body>
<h1>Run {html.escape(summary['run_id'])}</h1><p>Promotion: {decision}</p>
<table><tr>{head}</tr>{''.join(rows)}</table>
{next_item_section(results)}
<h2>MAP@K and recall@K</h2><img src="metrics_over_k.png">
<h2>Training time and popularity bias</h2><img src="training_time_and_popularity_bias.png">
{selection_section(folder, selection or {}, plt)}
{multistage_section(folder, (results.get("multistage") or {}).get("info") or {}, plt)}
</body></html>"""
    out = folder / "index.html"
    out.write_text(page)
    return out


def next_item_section(results: dict[str, dict]) -> str:
    """The next-item task (:mod:`recsys.evaluate.next_item`) beside MAP@10, best HR@20 first."""
    from recsys.evaluate.next_item import keys

    columns = (*keys(), "map@10")
    if not any(columns[0] in r["metrics"] for r in results.values()):
        return ""
    order = sorted(results, key=lambda m: (-(results[m]["metrics"].get(columns[0]) or 0.0), m))
    rows = "".join("<tr>" + f"<td>{html.escape(m)}</td>" + "".join(
        f"<td>{_cell(results[m]['metrics'].get(c))}</td>" for c in columns) + "</tr>" for m in order)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("model", *columns))
    return ("<h2>Next item</h2><p>Each test user's first held-out item by time, against the model's top 20 "
            f"(fitted items excluded).</p><table><tr>{head}</tr>{rows}</table>")


def _flat(params: dict[str, Any]) -> dict[str, Any]:
    """A model's parameters with the weighting's keys at the top (``power``, ``scheme``, ``half_life_days``)."""
    out = {k: v for k, v in params.items() if k != "weighting"}
    return {**out, **(params.get("weighting") or {})}


def selection_section(folder: Path, selection: dict, plt) -> str:
    """HTML of the run's search (nothing when it searched nothing) and its plot, ``selection.png``."""
    models = {m: r for m, r in (selection.get("models") or {}).items() if r.get("trials")}
    if not models:
        return ""
    k = selection.get("k", 10)
    fig, axes = plt.subplots(len(models), 4, figsize=(14, 3.2 * len(models)), squeeze=False)
    for row, (model, result) in zip(axes, sorted(models.items())):
        done = [t for t in result["trials"] if t["value"] is not None]
        for ax, name in zip(row, PLOTTED.get(model, ())):
            points = [(_flat(t["params"]).get(name), t["value"]) for t in done]
            points = [(x, y) for x, y in points if x is not None]
            ax.scatter([x for x, _ in points], [y for _, y in points], s=14, alpha=0.7)
            if name in LOG_SCALED:
                ax.set_xscale("log")
            ax.set_xlabel(name)
            ax.set_ylabel(f"{model} MAP@{k} (valid)")
            ax.grid(alpha=0.3)
        for ax in row[len(PLOTTED.get(model, ())):]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(folder / "selection.png", dpi=100)
    plt.close(fig)

    parts = [f"<h2>Model selection</h2><p>Budget {selection.get('budget_seconds', 0):.0f} s, spent "
             f"{selection.get('seconds', 0):.0f} s; trials scored with MAP@{k} on valid.</p>"]
    if selection.get("note"):
        parts.append(f"<p>{html.escape(selection['note'])}</p>")
    for model, result in sorted(models.items()):
        stopped = sum(1 for t in result["trials"] if t.get("stopped"))
        resumed = f" (continuing {result['previous_trials']} earlier trials)" if result["previous_trials"] else ""
        parts.append(f"<h3>{html.escape(model)}</h3><p>{len(result['trials'])} trials ({stopped} stopped early) in "
                     f"{result['seconds']:.0f} s, study <code>{html.escape(result['study'])}</code>{resumed}; "
                     f"chosen: <code>{html.escape(json.dumps(result.get('best'), sort_keys=True))}</code></p>")
        best = sorted((t for t in result["trials"] if t["value"] is not None and not t.get("stopped")),
                      key=lambda t: -t["value"])[:BEST_SHOWN]
        keys = sorted({key for t in best for key in _flat(t["params"]) if key not in ("seed", "num_blocks")})
        head = "".join(f"<th>{html.escape(x)}</th>" for x in ["trial", f"MAP@{k}", "s", *keys])
        rows = ["<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in
                                 [t["number"], t["value"], t["seconds"], *(_flat(t["params"]).get(x) for x in keys)])
                + "</tr>" for t in best]
        parts.append(f"<table><tr>{head}</tr>{''.join(rows)}</table>")
    parts.append('<img src="selection.png">')
    return "\n".join(parts)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def multistage_section(folder: Path, info: dict, plt) -> str:
    """HTML of the multi-stage model's ranker (feature importances, candidates) and its diversity trade-off plot,
    ``diversity.png`` (MAP@10 against intra-list diversity over the re-rank strength); nothing without the model."""
    if not info:
        return ""
    parts = [f"<h2>Multi-stage model</h2><p>{info.get('candidates_per_user', 0):.0f} candidates per user; candidate "
             f"recall of the labelled items {info.get('candidate_recall', 0):.3f}; ranker trained on "
             f"{info.get('users_with_a_positive', 0)} users; lists ordered by "
             f"<b>{html.escape(str(info.get('order', 'ranker')))}</b>; diversity strength {_cell(info.get('diversity'))}"
             f"{html.escape(' (' + info['diversity_note'] + ')') if info.get('diversity_note') else ''}.</p>"]
    orders = info.get("order_map@10") or {}
    if orders:
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{_cell(value)}</td></tr>" for name, value in
                       sorted(orders.items(), key=lambda kv: -kv[1]))
        parts.append("<h3>Order of the lists: MAP@10 on the labelled users (the ranker cross-fitted)</h3>"
                     f"<table><tr><th>order</th><th>MAP@10</th></tr>{rows}</table>")
    importances = info.get("feature_importance") or {}
    if importances:
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{share:.3f}</td></tr>" for name, share in
                       importances.items())
        parts.append(f"<h3>Feature importance (share of total gain)</h3><table><tr><th>feature</th><th>share</th>"
                     f"</tr>{rows}</table>")
    curve = info.get("diversity_curve") or []
    if curve:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([c["diversity"] for c in curve], [c["map@10"] for c in curve], marker="o")
        for c in curve:
            ax.annotate(f"{c['strength']:g}", (c["diversity"], c["map@10"]), fontsize=8,
                        textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel("intra-list diversity @10 (1 − cosine)")
        ax.set_ylabel("MAP@10 (labelled users, cross-fitted)")
        ax.set_title("diversity re-rank: the strength at each point")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / "diversity.png", dpi=110)
        plt.close(fig)
        chosen = info.get("diversity")
        rows = "".join(f"<tr><td>{c['strength']:g}{' (chosen)' if c['strength'] == chosen else ''}</td>"
                       f"<td>{c['map@10']:.4f}</td><td>{c.get('loss_bound', float('nan')):.3f}</td>"
                       f"<td>{c['diversity']:.3f}</td></tr>" for c in curve)
        parts.append('<h3>MAP@10 against diversity</h3><img src="diversity.png">'
                     "<table><tr><th>strength</th><th>MAP@10</th><th>loss bound (relative, one-sided)</th>"
                     f"<th>diversity</th></tr>{rows}</table>")
    return "\n".join(parts)

"""The side-by-side comparison report of a run: ``metrics.json``, ``index.html`` and PNG plots."""

from __future__ import annotations

import html
import json
from pathlib import Path


def write_report(folder: Path, summary: dict, results: dict[str, dict]) -> Path:
    """Write the report for one evaluated run into ``folder``; returns the HTML path."""
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
<h2>MAP@K and recall@K</h2><img src="metrics_over_k.png">
<h2>Training time and popularity bias</h2><img src="training_time_and_popularity_bias.png">
</body></html>"""
    out = folder / "index.html"
    out.write_text(page)
    return out

"""Turn runs into a table and plots: ``python -m vatt.report PATH`` (``make report run=PATH``).

``PATH`` is one run folder (``logs/train/runs/<time>``) or a sweep's folder
(``logs/train/multiruns/<time>``, one sub-folder per job). For every pretraining
job the report reads its Hydra config and TensorBoard events and writes, into
``PATH``:

- ``report.md``: one row per job — the overridden keys, parameters, forward
  GFLOPs per clip at the job's geometry and DropToken rate (counted on the meta
  device, as ``make flops``), train samples/s (median over the run), final and
  best ``val/t2v_R@10`` and ``val/v2a_R@10``;
- ``curves.png``: training loss and validation retrieval of every job, overlaid;
- ``droptoken.png`` when the jobs differ in ``model.droptoken``: retrieval against
  forward GFLOPs, one point per rate (the shape of the paper's Table 5).

A downstream run (``metrics.json`` in its folder), or a folder of them, gets a table of their metrics and one of
what each measured (the ``protocol`` record: items evaluated vs official, missing, the ids' hash, views, feature,
classifier, weights, whether it compares with the paper and why not).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from vatt.metrics import SMOKE_CHANCE

RETRIEVAL = ("val/t2v_R@10", "val/v2a_R@10")
# overrides that only say where things are, left out of the table
_PLUMBING = ("paths.", "hydra.", "data.path", "data.val_path", "ckpt_path", "data.num_workers")


def job_folders(path: Path) -> list[Path]:
    """The run folder itself, or a sweep's job folders in job order."""
    path = Path(path)
    if (path / ".hydra").is_dir():
        return [path]
    jobs = [p for p in path.iterdir() if p.is_dir() and (p / ".hydra").is_dir()] if path.is_dir() else []
    if not jobs:
        raise FileNotFoundError(f"{path} is neither a run folder (with .hydra/) nor a sweep folder of runs")

    def order(p: Path) -> tuple[int, str]:
        head = p.name.split("_", 1)[0]
        return (int(head) if head.isdigit() else 1 << 30, p.name)

    return sorted(jobs, key=order)


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a run: ``tag -> [(step, value), ...]`` in step order.

    From the run's TensorBoard events; a run logged without TensorBoard (``logger=csv``) from ``csv/metrics.csv``.
    """
    events = sorted(run.rglob("events.out.tfevents.*"))
    if not events:
        return csv_scalars(run)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for file in events:
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {k: sorted(v) for k, v in out.items()}


def csv_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of Lightning's CSV logs (``<run>/csv/metrics.csv``: a ``step`` column, one per metric, empty cells)."""
    import csv

    out: dict[str, list[tuple[int, float]]] = {}
    for file in sorted((run / "csv").rglob("metrics.csv")) if (run / "csv").is_dir() else []:
        with open(file, newline="") as f:
            for row in csv.DictReader(f):
                step = row.pop("step", None)
                if not step:
                    continue
                for tag, value in row.items():
                    if tag and value not in (None, ""):
                        out.setdefault(tag, []).append((int(float(step)), float(value)))
    return {k: sorted(v) for k, v in out.items()}


def _overrides(run: Path) -> list[str]:
    from omegaconf import OmegaConf

    f = run / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(f)] if f.is_file() else []


def _model_section(run: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    import vatt.runs  # noqa: F401 - registers ${vatt.root:}

    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    return OmegaConf.to_container(cfg.model, resolve=True)


def model_cost(model: dict[str, Any]) -> tuple[float, float]:
    """(parameters in millions, forward GFLOPs per clip) of a run's model settings at its geometry and DropToken rate."""
    from vatt.flops import forward_gflops
    from vatt.models import count_parameters, create_model
    from vatt.lightning.hparams import FILE_KEYS, backbone_kwargs

    import torch

    kwargs = {k: v for k, v in backbone_kwargs(**{**model, "vocab_size": 1000}).items() if k not in FILE_KEYS}
    name = kwargs.pop("name")
    with torch.device("meta"):
        params = count_parameters(create_model(name, **kwargs), trainable_only=True, exclude_word_table=True)
    return params / 1e6, forward_gflops(name, **kwargs)["total"]


def summarize(run: Path) -> dict[str, Any]:
    """One job's row: overrides, cost, throughput, final and best retrieval (NaN when not logged)."""
    tags = scalars(run)
    row: dict[str, Any] = {"job": run.name, "overrides": _overrides(run), "curves": tags}
    try:
        model = _model_section(run)
        row["droptoken"] = float(model.get("droptoken", float("nan")))
        row["params_m"], row["gflops"] = model_cost(model)
    except Exception as e:  # noqa: BLE001 - a report still lists a job whose model it cannot rebuild
        row["droptoken"], row["params_m"], row["gflops"] = float("nan"), float("nan"), float("nan")
        row["cost_error"] = str(e)
    speed = [v for _, v in tags.get("train/samples_per_sec", [])]
    row["samples_per_s"] = statistics.median(speed) if speed else float("nan")
    for tag in RETRIEVAL:
        values = [v for _, v in tags.get(tag, []) if math.isfinite(v)]
        row[f"{tag}_final"] = values[-1] if values else float("nan")
        row[f"{tag}_best"] = max(values) if values else float("nan")
    clips = tags.get("val/num_clips", [])
    row["val_clips"] = int(clips[-1][1]) if clips else None
    chance = [v for _, v in tags.get("val/v2a_chance_R@10", [])]
    row["smoke_test"] = bool(chance) and chance[-1] > SMOKE_CHANCE
    return row


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        return "–" if not math.isfinite(x) else f"{x:.{digits}f}"
    return str(x)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| job | overrides | params (M) | GFLOPs | samples/s | val clips | t2v R@10 final | t2v best | v2a R@10 final "
             "| v2a best |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        over = " ".join(o for o in r["overrides"] if not o.lstrip("+~").startswith(_PLUMBING))
        job = r["job"].split("_", 1)[0] if r["job"].split("_", 1)[0].isdigit() else r["job"]
        clips = "–" if r.get("val_clips") is None else f"{r['val_clips']}" + (" (smoke test)" if r["smoke_test"] else "")
        lines.append(
            f"| {job} | `{over or '(defaults)'}` | {_fmt(r['params_m'], 2)} | {_fmt(r['gflops'], 2)} | "
            f"{_fmt(r['samples_per_s'], 1)} | {clips} | {_fmt(r['val/t2v_R@10_final'])} | "
            f"{_fmt(r['val/t2v_R@10_best'])} | {_fmt(r['val/v2a_R@10_final'])} | {_fmt(r['val/v2a_R@10_best'])} |")
    if any(r.get("smoke_test") for r in rows):
        lines.append(f"\nsmoke test: validated on fewer than {round(10 / SMOKE_CHANCE)} clips, where R@10 by chance is "
                     f"above {SMOKE_CHANCE}; those R@10 values do not measure retrieval.")
    return "\n".join(lines) + "\n"


def _label(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The overrides that set this job apart from the others (the swept values), else the job's name."""
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    own = [o for o in row["overrides"] if o not in common and not o.lstrip("+~").startswith(_PLUMBING)]
    return " ".join(own)[:60] or row["job"]


def plot_curves(rows: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for r in rows:
        for ax, tag in zip(axes, ("train/loss", *RETRIEVAL)):
            points = r["curves"].get(tag, [])
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], marker="." if tag != "train/loss" else None,
                        label=_label(r, rows))
    for ax, tag in zip(axes, ("train/loss", *RETRIEVAL)):
        ax.set_title(tag)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_droptoken(rows: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ordered = sorted(rows, key=lambda r: r["gflops"])
    for tag, marker in zip(RETRIEVAL, ("o", "s")):
        ax.plot([r["gflops"] for r in ordered], [r[f"{tag}_final"] for r in ordered], marker=marker, label=tag)
    for r in ordered:
        ax.annotate(f"DropToken {r['droptoken']:g}", (r["gflops"], r["val/t2v_R@10_final"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("forward GFLOPs per clip")
    ax.set_ylabel("final R@10")
    ax.set_title("retrieval vs compute (paper Table 5)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


PROTOCOL_COLUMNS = ("task", "dataset", "splits", "items", "missing", "unreadable", "ids", "views", "feature",
                    "classifier", "checkpoint", "comparable to paper")


def protocol_cells(p: dict[str, Any] | None) -> list[str]:
    """The protocol columns of one job (``metrics.json``'s ``protocol`` object; dashes for runs without one)."""
    if not p:
        return ["–"] * len(PROTOCOL_COLUMNS)
    v, ckpt = p["views"], p["checkpoint"]
    official = "?" if p.get("items_official") is None else p["items_official"]
    weights = (ckpt["sha256"] or "")[:12] or ("random" if ckpt.get("random_init") else "–")
    comparable = "yes" if p["comparable_to_paper"] else "no: " + "; ".join(p["reasons"])
    return [p["task"], p["dataset"], ", ".join(p["splits"]), f"{p['items_evaluated']} / {official}",
            str(p["items_missing"]), str(p["items_unreadable"]), p["ids_sha256"][:12],
            f"{v['windows']}x{v['crops']}", str(p["feature"]), str(p["classifier"] or "–"), weights,
            comparable.replace("|", "/")]


def downstream_table(jobs: list[Path]) -> str:
    """Metrics and the protocol record of each evaluation job; ids and weights: the first 12 hex of their SHA-256."""
    rows = [(j.name, json.loads((j / "metrics.json").read_text())) for j in jobs if (j / "metrics.json").is_file()]
    keys = sorted({k for _, m in rows for k, v in m.items() if isinstance(v, (int, float))})
    lines = ["| job | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_fmt(m.get(k, float("nan"))) for k in keys) + " |" for name, m in rows]
    lines += ["", "What each job measured (`protocol` in its `metrics.json`; ids, weights: SHA-256, first 12 hex "
              "digits):", "", "| job | " + " | ".join(PROTOCOL_COLUMNS) + " |", "|---" * (len(PROTOCOL_COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(protocol_cells(m.get("protocol"))) + " |" for name, m in rows]
    return "\n".join(lines) + "\n"


def report(path: str | Path) -> dict[str, Path]:
    """Write ``report.md`` (and the plots) into ``path``; returns the files written."""
    path = Path(path)
    jobs = job_folders(path)
    written: dict[str, Path] = {}
    scored = [j for j in jobs if (j / "metrics.json").is_file()]
    unscored = [j for j in jobs if j not in scored]
    if scored and not any((j / "checkpoints").is_dir() for j in unscored):  # evaluations (a failed one: no metrics)
        text = f"# Report: {path}\n\nDownstream metrics (`metrics.json` of each job):\n\n" + downstream_table(scored)
        if unscored:
            text += (f"\n{len(unscored)} run(s) without metrics.json (stopped or failed) left out: "
                     f"{', '.join(j.name for j in unscored)}\n")
    else:
        rows = [summarize(j) for j in jobs]
        text = (f"# Report: {path}\n\nOne row per job; GFLOPs: forward per clip at the job's geometry and "
                "DropToken rate; samples/s: median of `train/samples_per_sec`.\n\n" + markdown(rows))
        written["curves"] = plot_curves(rows, path / "curves.png")
        text += "\nCurves: `curves.png`."
        rates = {r["droptoken"] for r in rows if math.isfinite(r["droptoken"])}
        if len(rates) > 1 and all(math.isfinite(r["gflops"]) for r in rows):
            written["droptoken"] = plot_droptoken(rows, path / "droptoken.png")
            text += " Retrieval against compute over the DropToken rates: `droptoken.png`."
        text += "\n"
    (path / "report.md").write_text(text)
    written["report"] = path / "report.md"
    return written


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a run folder or a sweep (multirun) folder")
    args = parser.parse_args(argv)
    written = report(args.path)
    print(Path(written["report"]).read_text())
    for name, file in written.items():
        print(f"{name}: {file}")
    return written


if __name__ == "__main__":
    main()

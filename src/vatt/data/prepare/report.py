"""The summary table printed at the end of a run."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .common import SKIPPED


def print_report(console: Any, summary: dict[str, Any], skipped: list[dict[str, Any]], examples: int = 3) -> None:
    from rich.markup import escape
    from rich.table import Table

    console.print(
        f"[bold]{summary['kind']}[/bold] -> {escape(summary['out'])}: {summary['inputs']} inputs, "
        f"[green]{summary['kept']} kept[/green], [yellow]{summary['skipped']} skipped[/yellow]"
        + (f" ({_fmt_duration(summary['kept_seconds'])} of media)" if summary.get("kept_seconds") else "")
    )
    if not skipped:
        return
    table = Table(title="skipped inputs", show_lines=False)
    table.add_column("reason")
    table.add_column("count", justify="right")
    table.add_column(f"first {examples} examples", overflow="fold")
    by_reason: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in skipped:
        by_reason[r["reason"]].append(r)
    for reason, records in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        lines = [f"{r['input']}: {r['detail']}" if r.get("detail") else r["input"] for r in records[:examples]]
        table.add_row(reason, str(len(records)), escape("\n".join(lines)))
    console.print(table)
    console.print(f"every skipped input is listed in {summary['out'].rstrip('/')}/{SKIPPED}", markup=False)


def _fmt_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def skip_record(e: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    record = {"input": e["input"], "reason": reason, "detail": detail, "id": e["id"]}
    if e.get("where"):
        record["where"] = e["where"]
    return record


# --------------------------------------------------------------------------- the API



"""Results of the benchmarks: the printed table, the JSON files, and the BENCHMARKS.md section.

A sub-benchmark returns a *result*: a dict with ``name``, ``title``, ``measures`` (what
exactly is timed), ``config``, ``columns`` (``[key, header]`` pairs), ``rows`` (dicts),
``checks`` (``{"name", "value", "target", "met"}``: the speed targets), ``notes`` and
``files`` (figures written).  ``skipped`` (a reason) replaces rows when it could not run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from .. import atomic

START = "<!-- predcode-bench:start -->"
END = "<!-- predcode-bench:end -->"


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 100:
            return f"{value:.0f}"
        if mag >= 10:
            return f"{value:.1f}"
        if mag >= 0.01:
            return f"{value:#.3g}"
        return f"{value:.2e}"
    return str(value)


def _cells(result: dict) -> tuple[list[str], list[list[str]]]:
    columns = result.get("columns") or []
    headers = [h for _, h in columns]
    rows = [[fmt(row.get(k)) for k, _ in columns] for row in result.get("rows", [])]
    return headers, rows


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def _numeric(cell: str) -> bool:
    if cell in ("-", "nan"):
        return True
    try:
        float(cell)
        return True
    except ValueError:
        return False


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _check_line(c: dict) -> str:
    met = c.get("met")
    mark = "n/a" if met is None else ("MET" if met else "NOT MET")
    return f"{c['name']}: {fmt(c.get('value'))} (target {c['target']}) {mark}"


def format_text(result: dict) -> str:
    """The table printed on the terminal."""
    lines = [f"== {result['name']}: {result.get('title', '')}"]
    if result.get("skipped"):
        lines.append(f"skipped: {result['skipped']}")
        return "\n".join(lines)
    headers, rows = _cells(result)
    if headers:
        lines.append(text_table(headers, rows))
    for extra in result.get("tables", []):
        lines.append(f"-- {extra['title']}")
        lines.append(
            text_table(
                [h for _, h in extra["columns"]], [[fmt(r.get(k)) for k, _ in extra["columns"]] for r in extra["rows"]]
            )
        )
    for c in result.get("checks", []):
        lines.append("check  " + _check_line(c))
    for note in result.get("notes", []):
        lines.append("note   " + note)
    for f in result.get("files", []):
        lines.append("wrote  " + f)
    return "\n".join(lines)


def format_markdown(result: dict) -> str:
    lines = [f"### {result['name']}: {result.get('title', '')}", ""]
    if result.get("measures"):
        lines += [result["measures"], ""]
    if result.get("skipped"):
        lines += [f"Skipped: {result['skipped']}", ""]
        return "\n".join(lines)
    headers, rows = _cells(result)
    if headers:
        lines += [markdown_table(headers, rows), ""]
    for extra in result.get("tables", []):
        lines += [
            f"{extra['title']}:",
            "",
            markdown_table(
                [h for _, h in extra["columns"]], [[fmt(r.get(k)) for k, _ in extra["columns"]] for r in extra["rows"]]
            ),
            "",
        ]
    if result.get("checks"):
        lines += ["| target | value | goal | met |", "|---|---|---|---|"]
        lines += [
            f"| {c['name']} | {fmt(c.get('value'))} | {c['target']} | "
            f"{'n/a' if c.get('met') is None else fmt(c['met'])} |"
            for c in result["checks"]
        ]
        lines.append("")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    for f in result.get("files", []):
        lines.append(f"- figure: `{f}`")
    lines.append("")
    return "\n".join(lines)


def machine_markdown(machine: dict) -> str:
    keys = [
        "date_utc",
        "command",
        "cpu",
        "logical_cpus",
        "threads",
        "cores",
        "memory_gib",
        "load_average_at_start",
        "platform",
        "python",
        "torch",
        "numpy",
        "predcode",
        "git_commit",
        "git_dirty",
        "gpu",
        "pcx_versions",
    ]
    rows = [
        [k, fmt(machine[k]) if not isinstance(machine[k], (list, dict)) else json.dumps(machine[k])]
        for k in keys
        if machine.get(k) is not None
    ]
    return markdown_table(["", ""], rows)


def summary_markdown(machine: dict, results: list[dict]) -> str:
    parts = [
        "Re-run with:",
        "",
        "```bash",
        machine.get("command", "predcode bench"),
        "```",
        "",
        "Machine and versions:",
        "",
        machine_markdown(machine),
        "",
    ]
    for r in results:
        parts.append(format_markdown(r))
    return "\n".join(parts)


def write_json(path: Path, payload: dict) -> Path:
    """A result file: :func:`predcode.atomic.write_json` indented for reading."""
    return atomic.write_json(path, payload, indent=2)


def update_markdown(path: Path, section: str) -> Path:
    """Replace the text between the bench markers of ``path`` (appending the markers if the
    file has none) with ``section``."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{START}\n{section.rstrip()}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path


def check(name: str, value: float | None, op: str, bound: float) -> dict:
    """A speed target: ``value op bound`` (``op`` is ``"<="`` or ``">="``)."""
    met = None
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        met = value <= bound if op == "<=" else value >= bound
    return {"name": name, "value": value, "target": f"{op} {bound:g}", "met": met}


def ratio(a: float | None, b: float | None) -> float | None:
    if (
        a is None
        or b is None
        or not b
        or (isinstance(a, float) and math.isnan(a))
        or (isinstance(b, float) and math.isnan(b))
    ):
        return None
    return a / b

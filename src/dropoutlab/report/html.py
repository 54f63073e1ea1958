"""The report as one static HTML page: no server, no network, no JavaScript.

Layout: a header (budget, data, hardware, versions, seeds, wall time per experiment, git commit,
date), each experiment's deviations from the paper with its premise checks, a
short table of contents, then one section per experiment — title and paper reference,
the findings first (✓ holds, ✗ contradicted, ≈ within noise, ? open) with their evidence,
the figures (PNG, linking to the SVG), the tables beside the paper's numbers (linking to the
Markdown and CSV files), and the notes on what was scaled down from the paper. Experiments that
could not run (data absent) get a section saying what was skipped and why.

All text is escaped; the stylesheet is inline; images are referenced by relative paths, so the
folder can be zipped, mailed and opened anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from dropoutlab.report.content import (
    CONTRADICTED,
    HOLDS,
    OPEN,
    WITHIN_NOISE,
    Analysis,
    Finding,
    PaperValue,
)
from dropoutlab.report.figures import PNG_DPI
from dropoutlab.report.header import ReportMeta, format_seconds, short_commit
from dropoutlab.report.tables import format_cell, outcome_counts, verdict

__all__ = ["ExperimentFiles", "Skipped", "render_page"]

_NUMERIC = re.compile(r"^\s*[-+−]?(\d|\.\d|∞)")


@dataclass(frozen=True)
class Skipped:
    """An experiment the report could not show, and why (e.g. its data set is absent)."""

    name: str
    title: str
    paper_ref: str
    reason: str


@dataclass
class ExperimentFiles:
    """An analysis with the relative paths of the files written for it.

    Attributes:
        analysis: What the experiment's analysis returned.
        figures: Per figure (same order as ``analysis.figures``): PNG path, SVG path, and the
            PNG's pixel size (width, height) so the page lays out before images load.
        tables: Per table (same order as ``analysis.tables``): Markdown path, CSV path.
    """

    analysis: Analysis
    figures: list[tuple[str, str, tuple[int, int]]] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)


_CSS = """
:root { color-scheme: light; --ink:#1d232b; --muted:#5b6673; --line:#dde2e8; --soft:#f5f7fa;
  --ok:#1a7f37; --okbg:#e6f4ea; --bad:#c0392b; --badbg:#fbeaea; --open:#8a6d00; --openbg:#fdf6dc;
  --noise:#4a5a6a; --noisebg:#e9eef3;
  --accent:#2457a6; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,
  sans-serif; color:var(--ink); background:#fff; }
main { max-width:1120px; margin:0 auto; padding:28px 24px 64px; }
a { color:var(--accent); }
h1 { font-size:1.7rem; margin:0 0 4px; line-height:1.25; }
h2 { font-size:1.35rem; margin:0; }
h3 { font-size:1.05rem; margin:22px 0 8px; }
.sub { color:var(--muted); margin:0 0 16px; }
.tally { display:flex; gap:10px; flex-wrap:wrap; margin:14px 0 20px; }
.pill { border-radius:999px; padding:3px 12px; font-weight:600; font-size:.92rem;
  background:var(--soft); }
.pill.ok { background:var(--okbg); color:var(--ok); }
.pill.bad { background:var(--badbg); color:var(--bad); }
.pill.open { background:var(--openbg); color:var(--open); }
.pill.noise { background:var(--noisebg); color:var(--noise); }
.meta { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:0;
  padding:14px 18px; background:var(--soft); border:1px solid var(--line); border-radius:8px;
  font-size:.93rem; }
.meta dt { color:var(--muted); }
.meta dd { margin:0; overflow-wrap:anywhere; }
code { font:.88em/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
nav { margin:22px 0 8px; }
nav ol { margin:6px 0; padding-left:22px; }
nav li { margin:2px 0; }
nav .counts { color:var(--muted); font-size:.9rem; margin-left:6px; }
section { border-top:2px solid var(--line); margin-top:34px; padding-top:22px; }
section.skipped { color:var(--muted); }
.findings { list-style:none; padding:0; margin:10px 0 6px; }
.findings li { display:grid; grid-template-columns:30px 1fr; gap:2px 10px; padding:8px 10px;
  border-radius:6px; margin:6px 0; background:var(--soft); }
.findings li.ok { background:var(--okbg); }
.findings li.bad { background:var(--badbg); }
.findings li.open { background:var(--openbg); }
.findings li.noise { background:var(--noisebg); }
.mark { grid-row:span 2; width:26px; height:26px; border-radius:50%; color:#fff;
  display:flex; align-items:center; justify-content:center; font-weight:700; }
.ok .mark { background:var(--ok); } .bad .mark { background:var(--bad); }
.open .mark { background:var(--open); } .noise .mark { background:var(--noise); }
.claim { font-weight:600; }
.evidence { color:var(--muted); font-size:.93rem; font-variant-numeric:tabular-nums; }
.figures { display:grid; grid-template-columns:repeat(auto-fill,minmax(440px,1fr)); gap:18px; }
figure { margin:0; border:1px solid var(--line); border-radius:8px; padding:10px; }
figure img { display:block; max-width:100%; height:auto; margin:0 auto; }
figure.wide { grid-column:1 / -1; }
figcaption { font-size:.9rem; color:var(--muted); margin-top:6px; }
figcaption b { color:var(--ink); }
.tablewrap { overflow-x:auto; }
table { border-collapse:collapse; font-size:.92rem; font-variant-numeric:tabular-nums;
  margin:4px 0; }
th, td { padding:5px 12px; border-bottom:1px solid var(--line); text-align:left;
  vertical-align:top; }
th { background:var(--soft); font-weight:600; }
td.num, td:first-child { white-space:nowrap; }
td.num { text-align:right; }
th.num { text-align:right; }
tbody tr:nth-child(even) td { background:#fafbfc; }
.caption, .files { font-size:.9rem; color:var(--muted); margin:4px 0 0; }
.notes { font-size:.93rem; color:var(--muted); }
.nothing { color:var(--muted); font-style:italic; }
footer { margin-top:48px; color:var(--muted); font-size:.85rem; }
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


_TONE = {HOLDS: "ok", CONTRADICTED: "bad", WITHIN_NOISE: "noise", OPEN: "open"}
_MARK = {HOLDS: "✓", CONTRADICTED: "✗", WITHIN_NOISE: "≈", OPEN: "?"}


def _badges(findings: Sequence[Finding]) -> str:
    """``✓ 3 · ✗ 0 · ≈ 1 · ? 0``: the four outcomes counted apart."""
    counts = outcome_counts(findings)
    return " · ".join(f"{_MARK[o]} {counts[o]}" for o in (HOLDS, CONTRADICTED, WITHIN_NOISE, OPEN))


def _is_numeric(value: Any) -> bool:
    if isinstance(value, (PaperValue, int, float)) and not isinstance(value, bool):
        return True
    return isinstance(value, str) and bool(_NUMERIC.match(value))


def _numeric_columns(rows: Sequence[Sequence[Any]], width: int) -> list[bool]:
    """Columns whose every present cell is a number: they are right-aligned."""
    flags = []
    for i in range(width):
        present = [row[i] for row in rows if i < len(row) and row[i] is not None]
        flags.append(bool(present) and all(_is_numeric(v) for v in present))
    return flags


def _seeds_text(meta: ReportMeta) -> str:
    """``"3 per configuration (the budget's default): seeds 0, 1, 2"``."""
    counts = sorted({len(info.seeds) for info in meta.experiments.values() if info.seeds})
    used = sorted({seed for info in meta.experiments.values() for seed in info.seeds})
    if meta.seeds:
        text = f"{meta.seeds} per configuration"
    elif counts:
        number = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        text = f"{number} per configuration (the budget's default)"
    else:
        text = "the budget's default per configuration"
    return _e(text + (f": seeds {', '.join(map(str, used))}" if used else ""))


def _header(meta: ReportMeta, experiments: Sequence[ExperimentFiles],
            skipped: Sequence[Skipped]) -> str:
    rows: list[tuple[str, str]] = [("Budget", f"<b>{_e(meta.budget)}</b>")]
    rows.append(("Seeds", _seeds_text(meta)))
    if meta.data:
        data = sorted(meta.data.items())
        rows.append(("Data", "<br>".join(f"{_e(k)}: {_e(v)}" for k, v in data)))
    hardware = _e(meta.hardware)
    others = sorted(meta.run_hardware - {meta.hardware})
    if others:
        hardware += "<br>runs made on: " + "; ".join(_e(h) for h in others)
    rows.append(("Hardware", hardware))
    versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in meta.versions.items())
    differing = [f"{_e(k)} {_e(', '.join(sorted(v)))}" for k, v in sorted(meta.run_versions.items())
                 if v - {meta.versions.get(k)}]
    if differing:
        versions += "<br>runs made with: " + ", ".join(differing)
    rows.append(("Versions", versions))
    commit = f"<code>{_e(short_commit(meta.git_commit))}</code>"
    other_commits = sorted(meta.run_commits - {meta.git_commit.partition("-")[0]})
    if other_commits:
        commit += " (this report); runs made at: " + ", ".join(
            f"<code>{_e(short_commit(c))}</code>" for c in other_commits)
    rows.append(("Git commit", commit))
    rows.append(("Written", _e(meta.created) + (" — rebuilt from stored runs, nothing trained"
                                                if meta.rebuilt else "")))
    if meta.command:
        rows.append(("Command", f"<code>{_e(meta.command)}</code>"))
    times = []
    if meta.wall_seconds is not None:
        what = "to rebuild this report" if meta.rebuilt else "wall in all (runs, analyses, report)"
        times.append(_e(f"{format_seconds(meta.wall_seconds)} {what}"))
    for item in experiments:
        name = item.analysis.experiment
        info = meta.experiments.get(name)
        if info is None:
            continue
        trained = f", {info.ran} trained now" if not meta.rebuilt else ""
        failed = f", {info.failed} failed or diverged" if info.failed else ""
        times.append(_e(f"{name}: {format_seconds(info.run_seconds)} of runs "
                        f"({_plural(info.runs, 'run')}, {_plural(len(info.seeds), 'seed')}"
                        f"{trained}{failed})"))
    if times:
        rows.append(("Time", "<br>".join(times)))
    if skipped:
        rows.append(("Skipped", ", ".join(_e(s.name) for s in skipped)))
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<dl class="meta">{items}</dl>'


def _grid(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return (f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _deviations(experiments: Sequence[ExperimentFiles]) -> str:
    """Per experiment: what this budget changed from the paper and why, and the premise
    checks (did the no-dropout net overfit, did the runs converge) with measured values."""
    blocks = []
    for item in experiments:
        a = item.analysis
        if not (a.deviations or a.premises or a.missing_rows):
            continue
        parts = [f'<h3><a href="#{_e(a.experiment)}">{_e(a.title)}</a></h3>']
        if a.deviations:
            parts.append(_grid(["what", "paper", "ours", "why"],
                               [[d.aspect, d.paper, d.ours, d.reason] for d in a.deviations]))
        if a.premises:
            mark = {True: "✓ passes", False: "✗ fails", None: "? cannot tell"}
            parts.append(_grid(["premise check", "result", "measured"],
                               [[p.check, mark[p.passed], p.measured] for p in a.premises]))
        if a.missing_rows:
            parts.append(f'<p class="caption">Rows not run (--rows): '
                         f'{_e(", ".join(a.missing_rows))}</p>')
        blocks.append("".join(parts))
    if not blocks:
        return ""
    return ('<details class="deviations" open><summary><b>Deviations from the paper and '
            "premise checks</b></summary>" + "".join(blocks) + "</details>")


def _toc(experiments: Sequence[ExperimentFiles], skipped: Sequence[Skipped]) -> str:
    items = []
    for item in experiments:
        a = item.analysis
        counts = _badges(a.findings) if a.findings else "no findings"
        items.append(f'<li><a href="#{_e(a.experiment)}">{_e(a.title)}</a> '
                     f'<span class="counts">{_e(a.paper_ref)} — {counts}</span></li>')
    for s in skipped:
        items.append(f'<li><a href="#{_e(s.name)}">{_e(s.title)}</a> '
                     f'<span class="counts">skipped: {_e(s.reason)}</span></li>')
    return f"<nav><b>Contents</b><ol>{''.join(items)}</ol></nav>"


def _findings(findings: Sequence[Finding]) -> str:
    if not findings:
        return '<p class="nothing">This experiment states no checkable findings.</p>'
    items = []
    for f in findings:
        items.append(
            f'<li class="{_TONE[f.outcome]}"><span class="mark" role="img" '
            f'aria-label="{verdict(f)}">{_MARK[f.outcome]}</span>'
            f'<span class="claim">{_e(f.claim)}</span>'
            f'<span class="evidence">{_e(f.evidence)}</span></li>')
    return f'<h3>Findings</h3><ul class="findings">{"".join(items)}</ul>'


def _figures(item: ExperimentFiles) -> str:
    if not item.analysis.figures:
        return ""
    blocks = []
    for fig, (png, svg, (width, height)) in zip(item.analysis.figures, item.figures, strict=True):
        caption = f"<b>{_e(fig.title)}.</b> {_e(fig.caption)}" if fig.caption else \
            f"<b>{_e(fig.title)}.</b>"
        wide = ' class="wide"' if width > 1.8 * height else ""  # multi-panel: full row
        blocks.append(
            f'<figure id="{_e(item.analysis.experiment)}-{_e(fig.name)}"{wide}>'
            f'<a href="{_e(svg)}"><img src="{_e(png)}" alt="{_e(fig.title)}" '
            f'width="{width * 96 // PNG_DPI}" height="{height * 96 // PNG_DPI}"></a>'
            f'<figcaption>{caption} <a href="{_e(svg)}">SVG</a> · '
            f'<a href="{_e(png)}">PNG</a></figcaption></figure>')
    return f'<h3>Figures</h3><div class="figures">{"".join(blocks)}</div>'


def _tables(item: ExperimentFiles) -> str:
    blocks = []
    for table, (md, csv) in zip(item.analysis.tables, item.tables, strict=True):
        numeric = _numeric_columns(table.rows, len(table.columns))
        head = "".join(f'<th class="num">{_e(c)}</th>' if num else f"<th>{_e(c)}</th>"
                       for c, num in zip(table.columns, numeric, strict=True))
        body = "".join(
            "<tr>" + "".join(
                f'<td class="num">{_e(format_cell(v))}</td>' if num
                else f"<td>{_e(format_cell(v))}</td>"
                for v, num in zip(row, numeric, strict=True)) + "</tr>"
            for row in table.rows)
        caption = f'<p class="caption">{_e(table.caption)}</p>' if table.caption else ""
        blocks.append(
            f'<h3 id="{_e(item.analysis.experiment)}-{_e(table.name)}">{_e(table.title)}</h3>'
            f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>{caption}"
            f'<p class="files"><a href="{_e(md)}">Markdown</a> · <a href="{_e(csv)}">CSV</a></p>')
    return "".join(blocks)


def _section(item: ExperimentFiles, meta: ReportMeta) -> str:
    a = item.analysis
    info = meta.experiments.get(a.experiment)
    runs = ""
    if info is not None:
        seeds = ", ".join(map(str, info.seeds)) or "–"
        runs = _e(f" · {_plural(info.runs, 'run')}, seed{'s' if len(info.seeds) > 1 else ''} "
                  f"{seeds}")
    notes = ""
    if a.notes:
        notes = ('<h3>Notes</h3><ul class="notes">'
                 + "".join(f"<li>{_e(n)}</li>" for n in a.notes) + "</ul>")
    return (f'<section id="{_e(a.experiment)}"><h2>{_e(a.title)}</h2>'
            f'<p class="sub">Paper: {_e(a.paper_ref)} · '
            f"<code>dropoutlab reproduce {_e(a.experiment)}</code>{runs}</p>"
            f"{_findings(a.findings)}{_figures(item)}{_tables(item)}{notes}</section>")


def _skipped_section(s: Skipped) -> str:
    return (f'<section id="{_e(s.name)}" class="skipped"><h2>{_e(s.title)}</h2>'
            f'<p class="sub">Paper: {_e(s.paper_ref)} · '
            f"<code>dropoutlab reproduce {_e(s.name)}</code></p>"
            f"<p><b>Skipped:</b> {_e(s.reason)}</p></section>")


def render_page(experiments: Sequence[ExperimentFiles], meta: ReportMeta,
                skipped: Sequence[Skipped] = ()) -> str:
    """The whole ``index.html`` as a string.

    Args:
        experiments: The analyses shown, with the files written for them, in report order.
        meta: The header's facts.
        skipped: Experiments that were not run, each with its reason.
    """
    all_findings = [f for item in experiments for f in item.analysis.findings]
    counts = outcome_counts(all_findings)
    tally = (f'<div class="tally"><span class="pill">{len(experiments)} experiment'
             f'{"s" if len(experiments) != 1 else ""} · {len(all_findings)} findings</span>'
             f'<span class="pill ok">✓ {counts[HOLDS]} hold beyond noise</span>'
             f'<span class="pill bad">✗ {counts[CONTRADICTED]} contradicted beyond noise</span>'
             f'<span class="pill noise">≈ {counts[WITHIN_NOISE]} within noise</span>'
             f'<span class="pill open">? {counts[OPEN]} open</span>'
             + (f'<span class="pill">{len(skipped)} skipped</span>' if skipped else "")
             + "</div>")
    sections = "".join(_section(item, meta) for item in experiments)
    sections += "".join(_skipped_section(s) for s in skipped)
    title = f"dropoutlab report — {meta.budget} budget"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body><main>"
        "<h1>Dropout: a reproduction of Srivastava et al. (JMLR 2014)</h1>"
        '<p class="sub">Our runs beside the paper\'s published numbers. The paper\'s p is the '
        "<em>retention</em> probability; values marked (?) could not be checked against the "
        "printed paper.</p>"
        f"{tally}{_header(meta, experiments, skipped)}{_deviations(experiments)}"
        f"{_toc(experiments, skipped)}{sections}"
        "<footer>Made by dropoutlab. Tables: ours as mean ± std (n seeds), the paper's number "
        "and the difference. Figures redraw the paper's.</footer>"
        "</main></body></html>\n"
    )

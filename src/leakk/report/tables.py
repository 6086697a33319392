"""The tables page of the Snakemake report: one self-contained HTML file (no external assets),
and beside it the headline fragment the report's landing page opens with.

``snakemake --report`` shows images itself and HTML results in a frame, so the tables
(summary, exact bounds, their check against sampling, guarantees, extrapolation) are
rendered here from the stages' Markdown/CSV outputs with a small Markdown subset
(headings, bullets, pipe tables, paragraphs, ``**bold**`` and ``code``).
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import polars as pl

from leakk.core.io import write_text

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}
th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right;font-variant-numeric:tabular-nums}
th{background:#eee}td:first-child,th:first-child{text-align:left}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
"""


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def markdown_to_html(md: str) -> str:
    """The Markdown subset the leakk stages write, as HTML (tables get class ``leakk``)."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            head, body = rows[0], rows[1:]
            out.append('<table class="leakk"><thead><tr>' + "".join(f"<th>{_inline(c)}</th>" for c in head)
                       + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</tbody></table>")
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        m = re.match(r"(#+) (.*)", line)
        if m:
            level = min(len(m.group(1)) + 1, 6)  # the page title is the only h1
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif line:
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def frame_to_markdown(frame: pl.DataFrame, digits: int = 3) -> str:
    """A pipe table of ``frame`` (floats rounded, nulls as –)."""
    def fmt(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return str(v)

    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([head, rule, *body])


def bounds_markdown(bounds: pl.DataFrame, judge: str, decoding: str,
                    ks=(1, 8, 64, 100, 1000, 10_000)) -> str:
    """Exact lower bound per model at a few k (sampled leak@k beside it where k ≤ n)."""
    sub = bounds.filter((pl.col("decoding") == decoding)
                        & (pl.col("judge").is_null() | (pl.col("judge") == judge))
                        & pl.col("k").is_in(list(ks)))
    from leakk.stats.estimate import model_order

    lines = [f"## Exact lower bound on leak@k (decoding `{decoding}`; sampled leak@k, judge `{judge}`, "
             "in brackets where k ≤ n)", "",
             "| model | " + " | ".join(f"k={k}" for k in ks) + " | bound ≤ sampled CI at every k ≤ n |",
             "|---|" + "---|" * (len(ks) + 1)]
    for m in model_order(sub["model"].to_list()):
        rows = {r["k"]: r for r in sub.filter(pl.col("model") == m).iter_rows(named=True)}
        cells = []
        for k in ks:
            r = rows.get(k)
            if r is None:
                cells.append("–")
                continue
            cell = f"{r['bound']:.3f}"
            if r["leak_at_k"] is not None:
                cell += f" ({r['leak_at_k']:.3f})"
            cells.append(cell)
        mine = bounds.filter((pl.col("model") == m) & (pl.col("decoding") == decoding)
                             & (pl.col("judge") == judge) & pl.col("consistent").is_not_null())
        ok = "–" if mine.is_empty() else ("yes" if mine["consistent"].all() else "**NO**")
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {ok} |")
    return "\n".join(lines) + "\n"


def tables_page(summary_md: str, bounds: pl.DataFrame, check: pl.DataFrame, reliability_md: str,
                judge: str, decoding: str, why: pl.DataFrame | None = None) -> str:
    """The whole tables page as one HTML document."""
    why_md = [] if why is None or why.is_empty() else [
        "## Why it leaks: the answer's first fact token under each model", "",
        "Rank and probability of the true fact token (untempered model), the share of questions where "
        "it is not the argmax (greedy cannot say it, sampling can), and the exact p of beginning with the "
        "answer at greedy and at the headline decoding.", "", frame_to_markdown(why), ""]
    parts = [summary_md, bounds_markdown(bounds, judge, decoding), *why_md,
             "## Exact p vs sampling: completions that begin with the answer", "",
             "Observed count vs Σ n·p (z = (observed − expected)/sd; other tokenisations can only add, "
             "so z ≥ 0 is expected, |z| ≲ 2 when they are rare).", "",
             frame_to_markdown(check) if check.height else "(no samples)", "", reliability_md]
    body = markdown_to_html("\n".join(parts))
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>leakk tables</title>'
            f"<style>{_STYLE}</style></head><body><h1>leakk: tables</h1>\n{body}\n</body></html>\n")


#: the headline fragment's file name, written beside the tables page (report/workflow.rst reads it)
HEADLINE = "headline.html"


def headline_fragment(summary_md: str) -> str:
    """The summary (its table and the lines saying what it shows, without the page title) as
    an HTML fragment for the report's landing page; styles are inline, scoped to the fragment."""
    body = "\n".join(line for line in summary_md.splitlines() if not line.startswith("# "))
    table = ("border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums;margin:.4em 0;"
             "white-space:nowrap")
    html_ = markdown_to_html(body).replace('<table class="leakk">', f'<table class="leakk" style="{table}">')
    # "0.43 [0.23, 0.64]": the CI on a second, smaller line keeps the table within the page's column
    html_ = re.sub(r"<td>([^<\[]+?) (\[[^\]]+\])</td>", r'<td>\1<br><small style="color:#666">\2</small></td>', html_)
    html_ = re.sub(r"<(t[hd])>", r'<\1 style="border:1px solid #bbb;padding:2px 6px">', html_)
    html_ = re.sub(r"<p>", '<p style="font-size:12px;margin:.3em 0">', html_)
    return f'<div class="leakk-headline" style="overflow-x:auto">\n{html_}\n</div>\n'


def figure_fragment(png: str | os.PathLike, alt: str) -> str:
    """``png`` as an ``<img>`` with a data URI: what the report's landing page can embed
    (Snakemake's ``embeddedimage`` directive leaves a relative path, which the single-file
    report cannot resolve)."""
    import base64

    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return f'<img class="leakk-figure" alt="{html.escape(alt)}" style="width:100%" src="data:image/png;base64,{data}">\n'


def write_tables_page(summary: str | os.PathLike, bounds: str | os.PathLike, check: str | os.PathLike,
                      reliability: str | os.PathLike, out: str | os.PathLike, judge: str, decoding: str,
                      why: str | os.PathLike | None = None) -> None:
    def csv(path):
        return pl.read_csv(path) if path and Path(path).stat().st_size else pl.DataFrame()

    summary_md = Path(summary).read_text()
    page = tables_page(summary_md, pl.read_csv(bounds), csv(check), Path(reliability).read_text(), judge, decoding,
                       why=csv(why))
    # the landing page's headline table first: a run whose tables page exists has it too
    write_text(headline_fragment(summary_md), Path(out).parent / HEADLINE)
    write_text(page, out)

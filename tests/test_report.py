"""The report's tables page (src/leakk/report.py), the DVC metric/plot files, and the headless
check of a Snakemake report (src/leakk/report_check.py)."""

from __future__ import annotations

import base64
import json

import polars as pl
import pytest

from leakk.report.tables import bounds_markdown, markdown_to_html, tables_page
from leakk.report.check import contact_sheet, decode_data_uri, embedded_results, find_chromium, parse_status


def test_markdown_tables_become_html_tables():
    md = "# T\n\nSome `code` and **bold**.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | <x> |\n\n- one\n- two\n"
    out = markdown_to_html(md)
    assert "<h2>T</h2>" in out and "<code>code</code>" in out and "<strong>bold</strong>" in out
    assert out.count("<tr>") == 3 and "<th>a</th>" in out and "<td>&lt;x&gt;</td>" in out
    assert "<ul><li>one</li><li>two</li></ul>" in out


def test_bounds_markdown_shows_bound_sampled_and_consistency():
    rows = []
    for m, ok in (("full", True), ("npo", False)):
        for k in (1, 8, 100):
            rows.append(dict(model=m, decoding="d", judge="fact", k=k, bound=0.1 * k / 100,
                             leak_at_k=None if k > 8 else 0.5, ci_low=None, ci_high=None,
                             consistent=None if k > 8 else (ok or k == 1)))
    md = bounds_markdown(pl.DataFrame(rows), "fact", "d", ks=(1, 8, 100))
    assert "| full | 0.001 (0.500) | 0.008 (0.500) | 0.100 | yes |" in md
    assert "| npo |" in md and md.strip().endswith("**NO** |")


def test_tables_page_is_self_contained_html():
    page = tables_page("# s\n\n| a |\n|---|\n| 1 |\n", pl.DataFrame(
        {"model": ["m"], "decoding": ["d"], "judge": ["j"], "k": [1], "bound": [0.5], "leak_at_k": [0.6],
         "consistent": [True]}), pl.DataFrame({"model": ["m"], "z": [0.3]}), "## r\n", "j", "d")
    assert page.startswith("<!DOCTYPE html>") and page.count("<table") == 3
    assert "http" not in page  # no external assets


def _fake_report(tmp_path):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 20).decode()
    tables = base64.b64encode(b"<html><body><table><tbody><tr><td>1</td></tr></tbody></table></body></html>").decode()
    results = {"results/figures/a.png": {"mime_type": "image/png", "caption": "<p>A</p>",
                                         "data_uri": f"data:image/png;charset=utf8;filename=a.png;base64,{png}"},
               "results/tables.html": {"mime_type": "text/html", "caption": "",
                                       "data_uri": f"data:text/html;charset=utf8;filename=t.html;base64,{tables}"}}
    return f"<html><script id=\"results\">\n    var results = {json.dumps(results)};\n    </script></html>", results


def test_embedded_results_and_contact_sheet(tmp_path):
    text, results = _fake_report(tmp_path)
    got = embedded_results(text)
    assert got == results
    assert decode_data_uri(got["results/tables.html"]["data_uri"]).startswith(b"<html>")
    sheet = contact_sheet(got)
    assert sheet.count('class="leakk-fig"') == 1 and "<td>1</td>" in sheet and "leakk-status" in sheet
    with pytest.raises(ValueError):
        embedded_results("<html></html>")
    assert parse_status("<div>images=7/7 tables=5 rows=40</div>") == {"images": (7, 7), "tables": 5, "rows": 40}


def test_dvc_metrics_and_plot_files(tmp_path):
    from leakk.core.io import write_parquet
    from leakk.stages.trust import dvc_files

    rows = [dict(model=m, decoding=d, judge="fact", k=k, leak_at_k=v, ci_low=v, ci_high=v, n=4, questions=3,
                 missing=0, excess_over_retrain=v)
            for m, v in (("full", 0.5), ("retrain", 0.0))
            for d, ks in (("greedy", [1]), ("t1.0_p1.0", [1, 4])) for k in ks]
    write_parquet(pl.DataFrame(rows), tmp_path / "leak.parquet", "leak_table")
    params = {"estimate": {"headline_judge": "fact", "headline_decoding": "t1.0_p1.0"}}
    dvc_files(tmp_path / "leak.parquet", params, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["k_max"] == 4
    assert metrics["models"]["full"] == {"greedy_leak": 0.5, "leak_at_1": 0.5, "leak_at_4": 0.5, "excess_at_4": 0.5}
    curve = pl.read_csv(tmp_path / "leak_curve.csv")
    assert curve.columns == ["model", "k", "leak_at_k", "ci_low", "ci_high"] and curve.height == 4


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="needs chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    """A fake report with one real figure: Chromium decodes it and renders the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leakk.report.check import check

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "a.png")
    png = base64.b64encode((tmp_path / "a.png").read_bytes()).decode()
    _, results = _fake_report(tmp_path)
    results["results/figures/a.png"]["data_uri"] = f"data:image/png;base64,{png}"
    report = tmp_path / "report.html"
    report.write_text("<html><body><h1 style=\"font-size:90px\">Tables leak</h1><script id=\"results\">\n var results = "
                      + json.dumps(results) + ";\n </script></body></html>")
    problems = check(report, None, tmp_path / "shots", min_tables=1)
    assert problems == []
    assert (tmp_path / "shots" / "contact_sheet.png").stat().st_size > 1000

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

    rows = [dict(model=m, attack="none", decoding=d, judge="fact", k=k, leak_at_k=v, ci_low=v, ci_high=v, n=4, questions=3,
                 missing=0, excess_over_retrain=v)
            for m, v in (("full", 0.5), ("retrain", 0.0))
            for d, ks in (("greedy", [1]), ("t1.0_p1.0", [1, 4])) for k in ks]
    write_parquet(pl.DataFrame(rows), tmp_path / "leak.parquet", "leak_table")
    params = {"estimate": {"headline_judge": "fact", "headline_decoding": "t1.0_p1.0"}}
    dvc_files(tmp_path / "leak.parquet", params, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["k_max"] == 4
    assert metrics["models"]["full"] == {"greedy_leak": 0.5, "leak_at_1": 0.5, "leak_at_4": 0.5, "excess_at_4": 0.5}
    # one short flat file per model (dvc metrics show: one row each), retain accuracy added
    (tmp_path / "metrics" / "stale.json").write_text("{}")  # a model no longer in the run
    utility = pl.DataFrame({"model": ["full", "retrain"], "retain_accuracy": [0.9, 0.8]})
    dvc_files(tmp_path / "leak.parquet", params, tmp_path, utility)
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["full.json", "retrain.json"]
    assert list(json.loads((tmp_path / "metrics" / "retrain.json").read_text()).items()) == [
        ("greedy", 0.0), ("leak@1", 0.0), ("leak@4", 0.0), ("excess@4", 0.0), ("retain", 0.8)]
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
    landing = ('<div class="leakk-headline"><table><tr><td>full</td></tr></table></div>'
               f'<img class="leakk-figure" src="data:image/png;base64,{png}">')
    report.write_text("<html><body><h1 style=\"font-size:90px\">Tables leak</h1>" + landing
                      + "<script id=\"results\">\n var results = " + json.dumps(results) + ";\n </script></body></html>")
    problems = check(report, None, tmp_path / "shots", min_tables=1)
    assert problems == []
    assert (tmp_path / "shots" / "contact_sheet.png").stat().st_size > 1000


def test_the_headline_fragment_is_the_summary_table_without_its_title(tmp_path):
    from leakk.report.tables import HEADLINE, headline_fragment, write_tables_page

    summary = ("# leak@k summary\n\nn = 4 samples per forget question; 95% CIs: a bootstrap …\n\n"
               "| model | greedy leak |\n|---|---|\n| full | 1.00 [1.00, 1.00] |\n| ga | 0.10 [0.00, 0.20] |\n")
    frag = headline_fragment(summary)
    assert "leak@k summary" not in frag and "<html" not in frag and "<style" not in frag
    assert frag.count("<tr>") == 3 and "<td style=" in frag and "1.00<br><small style=\"color:#666\">[1.00, 1.00]</small>" in frag
    assert "95% CIs: a bootstrap" in frag
    for name, text in (("summary.md", summary), ("reliability.md", "# r\n")):
        (tmp_path / name).write_text(text)
    pl.DataFrame({"model": ["m"], "decoding": ["d"], "judge": ["j"], "k": [1], "bound": [0.5], "leak_at_k": [0.6],
                  "consistent": [True]}).write_csv(tmp_path / "bounds.csv")
    (tmp_path / "check.csv").write_text("")
    write_tables_page(tmp_path / "summary.md", tmp_path / "bounds.csv", tmp_path / "check.csv",
                      tmp_path / "reliability.md", tmp_path / "out" / "tables.html", "j", "d")
    assert (tmp_path / "out" / HEADLINE).read_text() == frag


def _render_landing(tmp_path, names, config):
    """report/workflow.rst rendered as `snakemake --report` renders it (jinja2, then docutils
    with Snakemake's embeddedimage directive), in a work folder holding the run's files."""
    import os

    from docutils.core import publish_parts
    from jinja2 import Environment

    import snakemake.report  # noqa: F401  (registers the embeddedimage directive)
    from conftest import ROOT

    class Snakemake:
        pass

    Snakemake.config = config
    files = [type("F", (), {"target": n})() for n in names]
    text = Environment().from_string((ROOT / "report" / "workflow.rst").read_text()).render(
        snakemake=Snakemake, files=files, categories={})
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        return publish_parts(text, writer_name="html")["html_body"]
    finally:
        os.chdir(cwd)


def test_the_landing_page_opens_with_the_figure_and_the_headline_table(tmp_path):
    from leakk.config import load_params
    from leakk.report.tables import figure_fragment, headline_fragment

    from conftest import ROOT

    config = load_params(ROOT / "params.yaml")
    (tmp_path / "results" / "figures").mkdir(parents=True)
    png = tmp_path / "results" / "figures" / "greedy_vs_sampled_fact.png"
    png.write_bytes(base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="))
    png.with_suffix(".html").write_text(figure_fragment(png, "bars"))  # what the figures stage writes beside it
    (tmp_path / "results" / "headline.html").write_text(headline_fragment(
        "# leak@k summary\n\nline\n\n| model | greedy leak |\n|---|---|\n| full | 1.00 [1.00, 1.00] |\n"))
    page = _render_landing(tmp_path, ["greedy_vs_sampled_fact.png", "tables.html"], config)
    figure, table = page.index('src="data:image/png;base64,'), page.index('class="leakk-headline"')
    assert figure < table < page.index("Each forget question was sampled n = 64 times")
    assert "<td style=" in page and ">[1.00, 1.00]</small>" in page
    assert "95%" not in page  # the CI wording is the summary's, from params; never hard-coded here
    # before a run (no figure, no tables page) the landing page still renders, without them
    (tmp_path / "empty").mkdir()
    bare = _render_landing(tmp_path / "empty", [], config)
    assert "data:image/png" not in bare and "leakk-headline" not in bare and "of unlearned language models" in bare
    # the examples page, once the workflow makes it, is linked
    assert "examples.html" in _render_landing(tmp_path / "empty", ["examples.html"], config)


def test_plot_captions_state_the_ci_level_of_the_params():
    from jinja2 import Environment

    from conftest import ROOT

    for name in ("leak_at_k", "greedy_vs_sampled", "bound_vs_sampled", "rule_rounds"):
        text = (ROOT / "report" / f"{name}.rst").read_text()

        class Snakemake:
            config = {"estimate": {"ci": 0.9}}
            wildcards = {"judge": "fact"}

        out = Environment().from_string(text).render(snakemake=Snakemake)
        assert "90% CI" in out and "95%" not in out, name


def test_the_dvc_plots_page_template_has_vega_inline_and_no_cdn():
    from leakk.workflow.dvc_plots import html_template

    page = html_template()
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page
    assert "http" not in page.split("<script>")[0] and "cdn." not in page and "<script src" not in page
    assert page.count("<script>") == 3 and "vegaEmbed" in page


@pytest.mark.slow
def test_dvc_metrics_and_plots_views_offline(tmp_path):
    """In a DVC repo whose metrics are results/metrics/ and whose plot is leak_curve.csv (what
    dvc.yaml declares, see the report): `dvc metrics show` prints one row per model, and
    `leakk dvc-plots` writes the page outside tracked folders, with no CDN script."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from conftest import ROOT

    bin_dir = Path(sys.executable).parent
    run = lambda *a: subprocess.run(a, capture_output=True, text=True, cwd=tmp_path)  # noqa: E731
    assert run("git", "init", "-q").returncode == 0 and run(str(bin_dir / "dvc"), "init", "-q").returncode == 0
    shutil.copy(ROOT / ".dvc" / "config", tmp_path / ".dvc" / "config")
    shutil.copytree(ROOT / "dvc_plots", tmp_path / "dvc_plots")
    (tmp_path / "results" / "metrics").mkdir(parents=True)
    from leakk.stages.trust import model_metrics

    k, numbers = 64, {"full": 1.0, "ga": 0.433, "retrain": 0.0, "rule_graddiff": 0.0667}  # the widest names
    metrics = {"k_max": k, "models": {m: {"greedy_leak": v / 3, "leak_at_1": v / 7, f"leak_at_{k}": v,
                                          f"excess_at_{k}": v - 0.0123} for m, v in numbers.items()}}
    utility = pl.DataFrame({"model": list(numbers), "retain_accuracy": [0.9766] * 4})
    for m, row in model_metrics(metrics, utility).items():
        (tmp_path / "results" / "metrics" / f"{m}.json").write_text(json.dumps(row))
    pl.DataFrame({"model": ["full", "full", "ga", "ga"], "k": [1, 4, 1, 4], "leak_at_k": [0.5, 1.0, 0.2, 0.4],
                  "ci_low": [0.4, 1.0, 0.1, 0.3], "ci_high": [0.6, 1.0, 0.3, 0.5]}).write_csv(
        tmp_path / "results" / "leak_curve.csv")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  reliability:\n    cmd: 'true'\n    metrics:\n      - results/metrics:\n          cache: false\n"
        "plots:\n  - results/leak_curve.csv:\n      x: k\n      y: leak_at_k\n      template: dvc_plots/leak_at_k.json\n")
    shown = run(str(bin_dir / "dvc"), "metrics", "show")
    rows = [line for line in shown.stdout.splitlines() if line.startswith("results/metrics/")]
    assert len(rows) == 4 and all(len(line) <= 90 for line in shown.stdout.splitlines()), shown.stdout
    made = run(str(bin_dir / "leakk"), "dvc-plots")
    assert made.returncode == 0, made.stderr
    page = (tmp_path / "results" / "dvc_plots" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vegaEmbed(" in page and '"leak_at_k"' in page
    assert sorted(p.name for p in (tmp_path / "dvc_plots").iterdir()) == ["leak_at_k.json"]
    plain = run(str(bin_dir / "dvc"), "plots", "show")  # plain dvc too: out_dir (.dvc/config) is results/
    assert plain.returncode == 0 and sorted(p.name for p in (tmp_path / "dvc_plots").iterdir()) == ["leak_at_k.json"]


def test_the_report_check_wants_the_finding_on_the_landing_page_and_highlights_in_examples():
    from leakk.report.check import examples_problems, landing_problems

    good = ('<p>x</p><img class="leakk-figure" alt="a" style="width:100%" src="data:image/png;base64,AAAA">'
            '<div class="leakk-headline"><table><tr><td>full</td></tr></table></div>')
    assert landing_problems(good) == []
    assert landing_problems("<div>a DAG</div>") == ["the landing page does not show the headline table",
                                                    "the landing page does not show the greedy-vs-sampled figure"]

    def page(body):
        return {"results/examples.html": {"mime_type": "text/html", "data_uri": "data:text/html;base64,"
                                          + base64.b64encode(body.encode()).decode()}}

    table = "<table><thead><tr><th>q</th></tr></thead><tbody><tr><td>a <mark>F</mark></td></tr>{}</tbody></table>"
    assert examples_problems(page(table.format(""))) == []
    assert examples_problems(page(table.format("<tr><td>no highlight</td></tr>"))) == [
        "results/examples.html: 2 examples but only 1 highlights"]
    assert examples_problems({}) == []

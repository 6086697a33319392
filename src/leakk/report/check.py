"""Check that a ``snakemake --report`` page renders its tables and every figure, in headless
Chromium (Debian's ``chromium`` package), and leave screenshots for a person to look at.

The Snakemake report is a single-page app: results live as data URIs in ``var results =
{…}`` and are shown one at a time on click, so a screenshot of the landing page alone shows
no figure. The check therefore (1) renders the report itself and checks that the app drew
its menu (``--dump-dom``) and screenshots it; (2) builds a *contact sheet* from the very
data URIs the report embeds — every image as ``<img>``, every HTML result inlined — opens
it in Chromium, whose script records which images decoded (``naturalWidth > 0``) and how
many table rows rendered, and screenshots it; (3) checks that every PNG under
``results/figures`` is in the report and that the screenshots are not blank.

    python -m leakk.report.check results/report.html --figures results/figures --out-dir results/report_check
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--no-first-run", "--hide-scrollbars")


def embedded_results(report_html: str) -> dict[str, dict]:
    """The ``var results = {…};`` object of a Snakemake report (path → entry with
    ``data_uri``, ``mime_type``, ``caption``)."""
    m = re.search(r"var results = (\{.*?\});?\s*</script>", report_html, re.S)
    if not m:
        raise ValueError("no `var results = {...}` in the report: not a Snakemake report?")
    return json.loads(m.group(1))


def decode_data_uri(uri: str) -> bytes:
    """Bytes of a ``data:`` URI (base64 or percent-encoded; extra ``;key=value`` allowed)."""
    head, _, data = uri.partition(",")
    if head.endswith(";base64"):
        return base64.b64decode(data)
    return urllib.parse.unquote_to_bytes(data)


def contact_sheet(results: dict[str, dict]) -> str:
    """One HTML page showing every embedded figure and table, with a script that writes
    ``images=<decoded>/<total> tables=<n> rows=<n>`` into ``#leakk-status`` once loaded."""
    parts = []
    for path, entry in sorted(results.items()):
        mime = entry.get("mime_type", "")
        parts.append(f"<h2>{html.escape(path)}</h2><div class=cap>{entry.get('caption') or ''}</div>")
        if mime.startswith("image/"):
            parts.append(f'<img class="leakk-fig" alt="{html.escape(path)}" src="{entry["data_uri"]}">')
        elif mime == "text/html":
            page = decode_data_uri(entry["data_uri"]).decode("utf-8", "replace")
            body = re.search(r"<body[^>]*>(.*)</body>", page, re.S)
            parts.append(f'<div class="leakk-html">{body.group(1) if body else page}</div>')
    script = """
<script>
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.leakk-fig');
  var ok = 0;
  imgs.forEach(function (i) { if (i.complete && i.naturalWidth > 0) ok++; });
  var tables = document.querySelectorAll('.leakk-html table');
  var rows = document.querySelectorAll('.leakk-html table tbody tr');
  document.getElementById('leakk-status').textContent =
    'images=' + ok + '/' + imgs.length + ' tables=' + tables.length + ' rows=' + rows.length;
});
</script>"""
    style = ("<style>body{font-family:sans-serif;margin:1em}img{max-width:1300px;display:block;"
             "border:1px solid #ccc}table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:2px 5px}"
             ".cap{color:#555;font-size:.9em;max-width:60em}</style>")
    return (f"<!DOCTYPE html><html><head><meta charset=utf-8><title>report contact sheet</title>{style}</head>"
            f"<body><div id=leakk-status>pending</div>{''.join(parts)}{script}</body></html>")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(binary: str, args: list[str], user_dir: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={user_dir}", *args],
                          capture_output=True, text=True, timeout=timeout)


def parse_status(dom: str) -> dict[str, tuple[int, int] | int]:
    m = re.search(r"images=(\d+)/(\d+) tables=(\d+) rows=(\d+)", dom)
    if not m:
        raise ValueError("the contact sheet's script did not run (no status in the DOM)")
    return {"images": (int(m.group(1)), int(m.group(2))), "tables": int(m.group(3)), "rows": int(m.group(4))}


def landing_problems(dom: str) -> list[str]:
    """What the rendered landing page lacks of the finding: the headline table (the summary's
    rows) and the greedy-vs-sampled figure (an embedded image), before anything else."""
    problems = []
    table = dom.find('class="leakk-headline"')
    figure = dom.find('class="leakk-figure"')
    if table < 0 or "<td" not in dom[table:]:
        problems.append("the landing page does not show the headline table")
    if figure < 0 or 'src="data:image/png;base64,' not in dom[figure:figure + 400]:
        problems.append("the landing page does not show the greedy-vs-sampled figure")
    return problems


def examples_problems(results: dict[str, dict]) -> list[str]:
    """The leaked-completions page, where the report has one: every example's leak highlighted."""
    for path, entry in results.items():
        if Path(path).name == "examples.html":
            page = decode_data_uri(entry["data_uri"]).decode("utf-8", "replace")
            rows = page.count("<tr>") - page.count("<thead>")
            if rows and page.count("<mark>") < rows:
                return [f"{path}: {rows} examples but only {page.count('<mark>')} highlights"]
    return []


def inked_pixels(png: Path) -> int:
    """Number of pixels of a screenshot that are not (near-)white."""
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(png)[..., :3]
    return int(np.sum(~np.all(img > 0.97, axis=-1)))


def check(report: Path, figures_dir: Path | None, out_dir: Path, binary: str | None = None,
          min_tables: int = 4) -> list[str]:
    """Run every check; return the list of problems (empty = the report renders)."""
    problems: list[str] = []
    text = report.read_text()
    results = embedded_results(text)
    names = {Path(p).name for p in results}
    images = [p for p, e in results.items() if e.get("mime_type", "").startswith("image/")]
    if not images:
        problems.append("the report embeds no figure")
    if not any(e.get("mime_type") == "text/html" for e in results.values()):
        problems.append("the report embeds no tables page")
    problems += examples_problems(results)
    if figures_dir is not None:
        missing = sorted(p.name for p in figures_dir.glob("*.png") if p.name not in names)
        if missing:
            problems.append(f"figures not in the report: {missing}")
    binary = binary or find_chromium()
    if binary is None:
        return problems + ["no chromium found (apt-get install -y chromium)"]
    out_dir.mkdir(parents=True, exist_ok=True)
    sheet = out_dir / "contact_sheet.html"
    sheet.write_text(contact_sheet(results))
    with tempfile.TemporaryDirectory() as user_dir:
        dom = _chromium(binary, ["--virtual-time-budget=20000", "--dump-dom", sheet.resolve().as_uri()], user_dir)
        try:
            status = parse_status(dom.stdout)
        except ValueError as e:
            return problems + [f"{e}; chromium said: {dom.stderr[-500:]}"]
        ok, total = status["images"]
        if ok != total or total != len(images):
            problems.append(f"{total - ok} of {total} figures did not render (report has {len(images)})")
        if status["tables"] < min_tables or status["rows"] == 0:
            problems.append(f"only {status['tables']} tables / {status['rows']} rows rendered")
        height = 900 * (len(images) + 3)
        _chromium(binary, ["--virtual-time-budget=20000", f"--window-size=1400,{height}",
                           f"--screenshot={(out_dir / 'contact_sheet.png').resolve()}", sheet.resolve().as_uri()],
                  user_dir)
        app = _chromium(binary, ["--virtual-time-budget=20000", "--dump-dom", report.resolve().as_uri()], user_dir)
        if "Tables" not in app.stdout or "leak" not in app.stdout:
            problems.append("the report page did not render its menu (no 'Tables' category in the DOM)")
        problems += landing_problems(app.stdout)
        _chromium(binary, ["--virtual-time-budget=20000", "--window-size=1400,1000",
                           f"--screenshot={(out_dir / 'report.png').resolve()}", report.resolve().as_uri()], user_dir)
    for shot in ("contact_sheet.png", "report.png"):
        path = out_dir / shot
        if not path.is_file():
            problems.append(f"no screenshot {shot}")
        elif inked_pixels(path) < 500:
            problems.append(f"screenshot {shot} is blank")
    (out_dir / "status.json").write_text(json.dumps({"status": status, "problems": problems}, indent=2))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leakk.report.check", description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--figures", type=Path, help="every PNG here must be in the report")
    parser.add_argument("--out-dir", type=Path, required=True, help="screenshots and the contact sheet go here")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM"))
    args = parser.parse_args(argv)
    problems = check(args.report, args.figures, args.out_dir, args.chromium)
    for p in problems:
        print(f"report check: {p}", file=sys.stderr)
    if not problems:
        print(f"report check: ok — screenshots in {args.out_dir}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

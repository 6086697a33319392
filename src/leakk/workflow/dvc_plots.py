"""``leakk dvc-plots``: ``dvc plots show`` that works offline, written outside tracked folders.

DVC's page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline it is blank. The same
libraries ship inside the installed Snakemake (its report embeds them, ``snakemake/assets``),
so :func:`html_template` inlines them into an HTML template DVC fills with the plots
(``--html-template``; a template without ``{scripts}`` gets no CDN tags). The page goes to
``results/dvc_plots/`` (ignored by git; ``.dvc/config`` sets ``plots.out_dir`` there too),
never into the tracked ``dvc_plots/`` folder, which holds the Vega-Lite template of the plot.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from leakk.core.errors import LeakkError
from leakk.core.io import write_text

OUT_DIR = Path("results/dvc_plots")
#: the libraries DVC's vega renderer loads, in load order (paths inside snakemake/assets/data)
LIBRARIES = ("vega/vega.js", "vega-lite/vega-lite.js", "vega-embed/vega-embed.js")


def _library(path: str) -> str:
    try:
        return (resources.files("snakemake.assets") / "data" / path).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        raise LeakkError(f"snakemake/assets/data/{path}: not in the installed snakemake (its report assets); "
                         "reinstall snakemake from its wheel") from None


def html_template() -> str:
    """A DVC plots page template (``{plot_divs}``) with the Vega libraries inlined: no network."""
    scripts = "\n".join(f"<script>\n{_library(path)}\n</script>" for path in LIBRARIES)
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>leakk: DVC plots</title>\n"
            f"{scripts}\n<style>table {{ border-spacing: 15px; }}</style>\n</head>\n<body>\n"
            "{plot_divs}\n</body>\n</html>\n")


def show(out_dir: str | os.PathLike = OUT_DIR, targets: Sequence[str] = (), extra: Sequence[str] = ()) -> Path:
    """Write the template to ``out_dir/template.html`` and run ``dvc plots show`` with it into
    ``out_dir``; return the page (``out_dir/index.html``)."""
    out_dir = Path(out_dir)
    template = out_dir / "template.html"
    text = html_template()
    if not (template.is_file() and template.read_text(encoding="utf-8") == text):
        write_text(text, template)
    dvc = Path(sys.executable).parent / "dvc"
    cmd = [str(dvc) if dvc.is_file() else "dvc", "plots", "show", "--html-template", str(template),
           "-o", str(out_dir), *extra, *targets]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise LeakkError(f"dvc plots show failed (status {proc.returncode}): "
                         f"{' '.join((proc.stderr or proc.stdout).split())[:300]}")
    return out_dir / "index.html"

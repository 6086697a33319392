"""The architecture holds: import-linter's contracts ([tool.importlinter] in pyproject.toml)
— library layers import downwards only, and the library never imports the workflow glue or
the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

LINT = Path(sys.executable).parent / "lint-imports"


def test_import_contracts_are_kept():
    if not LINT.exists():  # pragma: no cover - installed with leakk[test]
        pytest.fail("lint-imports is missing: pip install -e '.[test]' (import-linter)")
    proc = subprocess.run([str(LINT), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_a_library_import_of_the_workflow_breaks_a_contract(tmp_path):
    """The contracts can fail: a copy of the package whose core imports the stage table."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "leakk", copy / "leakk", ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "leakk" / "core" / "layout.py").open("a") as f:
        f.write("\n\ndef _upward():\n    from leakk.workflow import table  # noqa: F401\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    proc = subprocess.run([str(LINT), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(copy), "PATH": str(LINT.parent)})
    assert proc.returncode != 0
    assert "Layers import downwards only BROKEN" in proc.stdout
    assert "The library never imports the workflow glue or the CLI BROKEN" in proc.stdout


def test_plugins_declare_their_parameters_once():
    """Judges, unlearning methods and benchmarks declare their parameters (names, defaults,
    ranges) in a schema on the registered class or builder; no constructor or builder declares
    a default of its own."""
    import inspect

    from leakk.data import BENCHMARKS
    from leakk.judges import JUDGES
    from leakk.unlearn.methods import METHODS

    plugins = [(f"judge {n}", JUDGES.get(n), JUDGES.get(n).__init__) for n in JUDGES]
    plugins += [(f"method {n}", METHODS.get(n), METHODS.get(n).__init__) for n in METHODS]
    plugins += [(f"benchmark {n}", BENCHMARKS.get(n), BENCHMARKS.get(n)) for n in BENCHMARKS]
    for what, plugin, fn in plugins:
        assert plugin.params_schema["type"] == "object", what
        if fn is object.__init__:
            continue
        defaults = [p.name for p in inspect.signature(fn).parameters.values()
                    if p.default is not inspect.Parameter.empty]
        assert defaults == [], f"{what}: defaults outside its schema: {defaults}"
    assert {"beta"} == set(METHODS.get("npo").params_schema["properties"])
    assert not METHODS.get("ga").params_schema["properties"]


def test_the_unlearn_loops_keys_are_the_central_schemas():
    """The loop's keys (shared by every method) are the central schema's `unlearn_run`; a
    method's own keys come from its class."""
    from leakk.core.schema import params_schema
    from leakk.unlearn.run import LOOP_KEYS, RUN_KEYS

    run = params_schema()["$defs"]["unlearn_run"]["properties"]
    assert set(run) == {*LOOP_KEYS, *RUN_KEYS}


def test_no_method_declares_a_key_of_the_loops():
    """A method's own key that the loop also has would be taken from the method and read by the
    loop (RMU's `seed` beside a loop seed once did): the two name sets are disjoint."""
    from leakk.unlearn.methods import METHODS
    from leakk.unlearn.run import LOOP_KEYS, RUN_KEYS

    for name in METHODS:
        own = set(METHODS.get(name).params_schema.get("properties", {}))
        assert not own & {*LOOP_KEYS, *RUN_KEYS}, f"{name}: {sorted(own & {*LOOP_KEYS, *RUN_KEYS})}"

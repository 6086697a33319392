"""Console status lines of long stages (leakk.progress): what they promise is true."""

from __future__ import annotations

import io

from leakk.core.progress import tqdm


def _lines(cap: bool, steps_done: int, total: int = 300, postfix: dict | None = None) -> list[str]:
    out = io.StringIO()
    bar = tqdm(total=total, desc="unlearn ga", unit="step", cap=cap, disable=False, file=io.StringIO())
    bar._console = out  # as under a workflow engine (stderr to a log, stdout to the console)
    bar._start -= 10.0  # 10 s in
    bar.n = steps_done
    if postfix:
        bar.set_postfix(**postfix)
    bar._line(bar._start + 10.0, final=False)
    bar.close()
    return out.getvalue().splitlines()


def test_a_step_cap_is_reported_as_a_cap_not_as_the_finish():
    """With a stop criterion, `steps` is a cap: the line must not promise 300 steps (the
    run stops at ~76), only that it ends by then; the last check's greedy leak is shown."""
    line, final = _lines(cap=True, steps_done=40, postfix={"greedy_leak": "0.350"})
    assert line == ("unlearn ga: 40 steps of at most 300 (it may stop earlier), 10 s, at most ~65 s left "
                    "[greedy_leak=0.350]")
    assert "%" not in line and final.startswith("unlearn ga: done, 40 steps in ")


def test_a_fixed_total_keeps_its_percentage_and_eta():
    line, _ = _lines(cap=False, steps_done=40)
    assert line == "unlearn ga: 40/300 steps (13%), 10 s, ~65 s left"

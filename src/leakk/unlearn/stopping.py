"""Stop unlearning when the model "looks forgotten" under greedy decoding, as practitioners do.

Every ``every`` steps the forget questions are answered greedily in the phrasings the model
was *trained* on (never the evaluation phrasing), judged, and the run stops once the greedy
leak rate is ≤ ``greedy_leak``. This is the very criterion the paper shows to be an illusion:
the evaluation then samples the held-out phrasing and finds the leaks greedy decoding hides.
Sampling and judging go through the package's sampler and judges (no second copy).
"""

from __future__ import annotations

import logging
from typing import Any

import polars as pl

log = logging.getLogger(__name__)


def stop_judge(stop: dict[str, Any]) -> dict[str, Any]:
    """The judge spec (``{"type": …, params…}``) of an unlearn run's ``stop`` criterion."""
    judge = stop["judge"]
    return {"type": judge} if isinstance(judge, str) else dict(judge)


class GreedyStop:
    """A :data:`leakk.unlearn.loop.StopCheck` for ``unlearn.<name>.stop``."""

    def __init__(self, model, tokenizer, data: pl.DataFrame, params: dict[str, Any], *, name: str,
                 stop: dict[str, Any]):
        from leakk.judges.run import build_judges
        from leakk.sampling.stage import TRAINING_PHRASINGS, questions_for

        self.model, self.tokenizer, self.data, self.params, self.name = model, tokenizer, data, params, name
        self.threshold = stop["greedy_leak"]
        # built once for every check and phrasing (a model judge loads its model once)
        self.judges = build_judges({"stop": stop_judge(stop)}, device=params["device"])
        self.max_new_tokens = stop["max_new_tokens"]
        self.questions = questions_for(data, ["forget"], TRAINING_PHRASINGS)

    def greedy_leak(self) -> dict[str, Any]:
        """The greedy leak over (question, training phrasing) pairs: ``greedy_leak`` (the rate over
        the pairs judged), ``greedy_judged`` (how many) and ``greedy_missing`` (failed judgments,
        counted as leaked: a broken judge never makes a model look forgotten).

        Phrasing by phrasing, each drawn exactly as one call for all would draw it: once the leaks
        found already put the rate over the threshold whatever the other phrasings hold, the rest
        cannot change the decision and are not drawn. Early in a run, far above the threshold,
        most checks end after one or two phrasings; the check that stops a run judges them all."""
        from leakk.judges import judge_samples
        from leakk.sampling.backend import SamplingRequest
        from leakk.sampling.decoding import GREEDY
        from leakk.sampling.hf_backend import HFBackend
        from leakk.sampling.stage import sample_phrasings

        backend = HFBackend(self.model, self.tokenizer, self.params["sample"].get("batch_rows", "auto"))
        request = SamplingRequest.build(GREEDY, n=1, max_new_tokens=self.max_new_tokens, seed=0)
        total, leaked, missing, judged = self.questions.height, 0, 0, 0
        for _, part in self.questions.group_by("phrasing", maintain_order=True):
            samples = sample_phrasings(
                backend, part, request, template=self.params["prompt_template"], every_phrasing=True,
                desc=f"unlearn {self.name}: greedy check", key=f"unlearn.{self.name}.stop.max_new_tokens")
            verdicts = judge_samples(samples, self.data, self.judges, progress=False)["leaked"]
            leaked += int(verdicts.fill_null(True).sum())
            missing += verdicts.null_count()
            judged += verdicts.len()
            if leaked / total > self.threshold:  # even if every pair left is clean, the rate stays over
                break
        return {"greedy_leak": leaked / judged, "greedy_judged": judged, "greedy_missing": missing}

    def __call__(self, steps_done: int) -> dict[str, Any]:
        result = self.greedy_leak()
        rate, judged, total = result["greedy_leak"], result["greedy_judged"], self.questions.height
        stop = judged == total and rate <= self.threshold
        note = (f" ≤ {self.threshold}: stop" if stop else
                f" ({judged} of {total} pairs: over {self.threshold} already)" if judged < total else "")
        log.info("unlearn %s step %d: greedy leak on training phrasings %.3f%s", self.name, steps_done, rate, note)
        return {**result, "stop": stop}


def stop_reason(train_log: list[dict[str, Any]], run: dict[str, Any]) -> str:
    """One line: when and why the run stopped."""
    last = train_log[-1] if train_log else {"step": 0}
    if last.get("stop"):
        return (f"stopped at step {last['step']}: greedy leak {last['greedy_leak']:.3f} on the training "
                f"phrasings ≤ stop.greedy_leak={run['stop']['greedy_leak']}")
    if "greedy_leak" in last:
        return (f"reached the step cap ({run['steps']}) with greedy leak {last['greedy_leak']:.3f} > "
                f"stop.greedy_leak={run['stop']['greedy_leak']}")
    return f"ran the fixed {last['step']} steps"

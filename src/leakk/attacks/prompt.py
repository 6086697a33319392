"""Prompt attacks: the model is unchanged, the evaluation prompt is not.

- ``style: prefix`` — the answer is begun for the model ("The answer is"), the prefix-injection
  of jailbreak work: a model that learned to refuse or deflect the question's first tokens may
  still complete a sentence already under way.
- ``style: kshot`` — ``shots`` retain question-answer pairs, written in the prompt template
  itself, come before the question (few-shot context, as in Lynch et al. 2024's in-context
  probes): the model is shown the format of a fact-stating answer before it is asked.
- ``style: paraphrase`` — each question is asked in every phrasing the benchmark has (the
  evaluation phrasing first, then the training phrasings: TOFU's ``question``, the synthetic
  benchmark's ``train_questions``), and its n completions are spread evenly over them, so the
  attacker's budget is the same and only the wording varies. Greedy (one completion) asks the
  evaluation phrasing; the exact bound pools the phrasings (:mod:`leakk.stats.bounds`).

``prefix`` and ``kshot`` rewrite the ``prompt_template`` the attacked model is sampled (and
bounded) with; ``paraphrase`` rewrites the evaluation column of the rows it is sampled on
(:meth:`PromptAttack.evaluated`). Every backend sees the same token ids: the prompt is still
``encode_prompt(question, tokenizer, template)``. Shots come from retain authors only (drawn
by ``seed``), never from the forget set, so an attacked retrain model has nothing to recover:
the control. With a chat template, ``prefix`` and ``kshot`` are refused (the shots and the
prefix would have to be written as chat turns); ``paraphrase`` keeps the template and runs.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import polars as pl

from leakk.attacks import Attack, Target, register_attack
from leakk.core.errors import ParamsError


def _literal(text: str) -> str:
    """``text`` as a literal inside a format-string template (braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


@register_attack("prompt")
class PromptAttack(Attack):
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "style": {"enum": ["prefix", "kshot", "paraphrase"], "default": "prefix",
                      "description": "prefix: begin the answer for the model; kshot: retain QA examples first; "
                                     "paraphrase: every phrasing of the question, n spread over them"},
            "prefix": {"type": "string", "minLength": 1, "maxLength": 200, "default": "The answer is",
                       "description": "the answer's opening (style prefix)"},
            "shots": {"type": "integer", "minimum": 1, "maximum": 64, "default": 3,
                      "description": "retain examples before the question (style kshot)"},
            "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295, "default": 0,
                     "description": "draws the retain examples (style kshot)"}}}

    def __init__(self, *, style: str, prefix: str, shots: int, seed: int) -> None:
        self.style, self.prefix, self.shots, self.seed = style, prefix, shots, seed

    @classmethod
    def refuse(cls, params: dict[str, Any], own: dict[str, Any]) -> str | None:
        style = own["style"]
        if params["prompt_template"] == "chat" and style != "paraphrase":
            return (f"style {style} rewrites a format-string prompt_template, and this one is 'chat' "
                    "(rule: a template such as 'Question: {question} Answer:', or style paraphrase)")
        return None

    def shot_rows(self, data: pl.DataFrame) -> list[tuple[str, str]]:
        """The (question, answer) retain pairs shown before the question, in a fixed order."""
        retain = data.filter(pl.col("split") == "retain").sort("qid")
        if retain.height < self.shots:
            raise ParamsError(f"attack prompt: shots = {self.shots} but the benchmark has {retain.height} retain rows")
        rows = random.Random(self.seed).sample(range(retain.height), self.shots)
        return [(retain["question"][i], retain["answer"][i]) for i in rows]

    def template(self, template: str, data: pl.DataFrame) -> str:
        if self.style == "paraphrase":
            return template
        if template == "chat":
            raise ParamsError(self.refuse({"prompt_template": template}, {"style": self.style}))
        if self.style == "prefix":
            return template + " " + _literal(self.prefix)
        shots = "".join(template.format(question=q) + " " + a.strip() + "\n\n" for q, a in self.shot_rows(data))
        return _literal(shots) + template

    def evaluated(self, data: pl.DataFrame, question_column: str) -> pl.DataFrame:
        """Style paraphrase: the evaluation column becomes each question's phrasing set (the
        evaluation phrasing(s) first, then every other question column's, without repeats)."""
        if self.style != "paraphrase":
            return data
        from leakk.data import training_column
        from leakk.sampling.stage import TRAINING_PHRASINGS

        column = training_column(data) if question_column == TRAINING_PHRASINGS else question_column
        sources = [c for c in dict.fromkeys([column, training_column(data), "question", "paraphrased_question"])
                   if c in data.columns]
        as_lists = [pl.col(c) if data.schema[c] == pl.List(pl.String) else pl.concat_list(pl.col(c)) for c in sources]
        phrasings = pl.concat_list(as_lists).list.drop_nulls().list.unique(maintain_order=True)
        attacked = data.with_columns(phrasings.alias(column))
        if attacked[column].list.len().max() < 2:
            raise ParamsError(f"attack prompt: style paraphrase needs a second phrasing of a question, and the "
                              f"benchmark has one (columns {sources}); use style prefix or kshot")
        return attacked

    def apply(self, model, target: Target) -> dict[str, Any]:
        return {"attack": "prompt", "style": self.style,
                "template": self.template(target.template, target.data)}

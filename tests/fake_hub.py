"""A small HTTP server on 127.0.0.1 speaking the part of the Hugging Face Hub protocol that
``huggingface_hub.snapshot_download`` uses (point ``HF_ENDPOINT`` at it):

- ``GET /api/{models,datasets}/<org>/<name>/revision/<rev>``: repo info with the commit ``sha``
- ``GET /api/{models,datasets}/<org>/<name>/tree/<rev>``: the file list (path, size, oid)
- ``HEAD``/``GET /[datasets/]<org>/<name>/resolve/<rev>/<path>``: a file, with the
  ``X-Repo-Commit`` and ``ETag`` headers; an unknown revision answers 404 with
  ``X-Error-Code: RevisionNotFound``, as the hub does.

``Range: bytes=N-`` is honoured (206), so an interrupted download resumes; ``cut_once`` makes
the next GET of a file die halfway through its body.

Repos are folders on disk, each served at one commit (``main`` or the commit hash resolve to it).
Every request is logged in ``requests``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], tuple[Path, str]] = {}  # (type, id) → (folder, commit)
        self.requests: list[str] = []
        self.cut_once: set[str] = set()  # file names whose next GET stops halfway
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                rng = self.headers.get("Range")
                hub.requests.append(f"{self.command} {self.path}" + (f" {rng}" if rng else ""))
                status, headers, payload = hub.route(urlparse(self.path).path)
                if status == 200 and rng and rng.startswith("bytes="):  # resume: the rest of the file
                    start = int(rng[6:].split("-")[0])
                    headers["Content-Range"] = f"bytes {start}-{len(payload) - 1}/{len(payload)}"
                    status, payload = 206, payload[start:]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if not body:
                    return
                name = urlparse(self.path).path.rsplit("/", 1)[-1]
                if self.command == "GET" and name in hub.cut_once:  # the connection dies midway
                    hub.cut_once.discard(name)
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(payload)

        self.errors: list[str] = []

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # record, do not print
                import traceback

                hub.errors.append(traceback.format_exc())

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, repo_type: str, repo_id: str, folder: Path) -> str:
        """Serve ``folder`` as ``repo_id``; return its (content-derived) commit hash."""
        digest = hashlib.sha1()
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(folder)).encode() + f.read_bytes())
        commit = digest.hexdigest()
        self.repos[(repo_type, repo_id)] = (folder, commit)
        return commit

    def _files(self, folder: Path) -> list[dict]:
        return [{"type": "file", "path": str(f.relative_to(folder)), "size": f.stat().st_size,
                 "oid": hashlib.sha1(f.read_bytes()).hexdigest()}
                for f in sorted(folder.rglob("*")) if f.is_file()]

    def route(self, path: str) -> tuple[int, dict, bytes]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        not_found = (404, {"X-Error-Code": "RepoNotFound"}, b'{"error": "Repository not found"}')
        if parts[0] == "api":  # api/<type>s/<org>/<name>/(revision|tree)/<rev>
            repo_type, repo_id, what, rev = parts[1][:-1], "/".join(parts[2:4]), parts[4], parts[5]
        else:  # [datasets/]<org>/<name>/resolve/<rev>/<path>
            repo_type = "dataset" if parts[0] == "datasets" else "model"
            parts = parts[1:] if parts[0] == "datasets" else parts
            repo_id, what, rev, file = "/".join(parts[:2]), parts[2], parts[3], "/".join(parts[4:])
        if (repo_type, repo_id) not in self.repos:
            return not_found
        folder, commit = self.repos[(repo_type, repo_id)]
        if rev not in ("main", commit):
            return 404, {"X-Error-Code": "RevisionNotFound"}, b'{"error": "Invalid rev id"}'
        if what == "revision":
            info = {"id": repo_id, "sha": commit, "siblings": [{"rfilename": f["path"]} for f in self._files(folder)]}
            return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()
        if what == "tree":
            return 200, {"Content-Type": "application/json"}, json.dumps(self._files(folder)).encode()
        target = folder / file
        if what != "resolve" or not target.is_file():
            return 404, {"X-Error-Code": "EntryNotFound"}, b'{"error": "Entry not found"}'
        data = target.read_bytes()
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                     "Content-Type": "application/octet-stream"}, data

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

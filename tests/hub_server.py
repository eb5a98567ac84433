"""A small in-memory server speaking the Hugging Face Hub protocol, for tests (standard library only).

It implements what the real ``huggingface_hub`` client needs to create a repo,
upload a folder in one commit (all files "regular", i.e. base64 in the NDJSON
commit: no Xet or LFS storage), create branches and pull requests, and
download files (``hf_hub_download``, ``snapshot_download``, timm ``hf-hub:``,
transformers ``from_pretrained``).  Dataset repositories (``repo_type="dataset"``) are kept
under the key ``datasets/ORG/NAME`` and served at ``/api/datasets/...`` and ``/datasets/...``.
docs/hub.md ("Format notes") lists what it serves.

It binds to 127.0.0.1 on a free port, answers a bounded number of requests and
shuts itself down after ``max_seconds`` at the latest.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qs, quote, unquote, urlsplit


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    commits: Dict[str, Dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}
    refs: Dict[str, str] = field(default_factory=dict)  # "main", "dev", "refs/pr/1" -> sha
    commit_messages: List[str] = field(default_factory=list)
    pull_requests: List[Dict] = field(default_factory=list)

    def resolve(self, revision: str) -> Optional[str]:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None

    def files(self, revision: str = "main") -> Dict[str, bytes]:
        sha = self.resolve(revision)
        return dict(self.commits[sha]) if sha else {}


@dataclass
class Failure:
    """Answer ``status`` to requests whose path contains ``path_contains`` (all when empty)."""

    status: int
    path_contains: str = ""
    message: str = "injected failure"


class HubState:
    def __init__(self):
        self.repos: Dict[str, Repo] = {}
        self.requests: List[Tuple[str, str]] = []
        self.auth_headers: List[Optional[str]] = []
        self.failure: Optional[Failure] = None
        self.lock = threading.Lock()
        self._counter = 0

    def new_commit(self, repo: Repo, files: Dict[str, bytes], message: str) -> str:
        self._counter += 1
        digest = hashlib.sha1(f"{repo.repo_id}:{self._counter}:{message}".encode())
        for path in sorted(files):
            digest.update(path.encode() + hashlib.sha256(files[path]).digest())
        sha = digest.hexdigest()
        repo.commits[sha] = files
        repo.commit_messages.append(message)
        return sha


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format, *args):  # keep test output clean
        pass

    # -- plumbing -------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, headers=None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _error(self, status: int, code: str, message: str, commit: Optional[str] = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._json(status, {"error": message}, headers)

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def _dispatch(self) -> None:
        state = self.server.state
        body = self._body() if self.command in ("POST", "PUT") else b""
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        with state.lock:
            state.requests.append((self.command, self.path))
            state.auth_headers.append(self.headers.get("Authorization"))
            self.server.count += 1
            failure = state.failure
        if self.server.count > self.server.max_requests:
            return self._error(503, "TooManyRequests", "test server request budget exhausted")
        if failure and failure.path_contains in path:
            return self._json(failure.status, {"error": failure.message})
        with state.lock:
            return self._route(path, query, body)

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    # -- routes ---------------------------------------------------------------------------------
    def _route(self, path: str, query, body: bytes) -> None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if path == "/api/agent-harnesses":
            return self._json(200, {"standardEnvVars": [], "harnesses": {}})
        if path == "/api/repos/create" and self.command == "POST":
            return self._create_repo(json.loads(body or b"{}"))
        if path == "/api/validate-yaml" and self.command == "POST":
            return self._json(200, {"errors": [], "warnings": []})
        if len(parts) >= 4 and parts[0] == "api" and parts[1] == "datasets":
            return self._api_model(f"datasets/{parts[2]}/{parts[3]}", parts[4:], query, body)
        if len(parts) >= 6 and parts[0] == "datasets" and parts[3] == "resolve":
            return self._resolve(f"datasets/{parts[1]}/{parts[2]}", parts[4], "/".join(parts[5:]))
        if len(parts) >= 4 and parts[0] == "api" and parts[1] == "models":
            repo_id = f"{parts[2]}/{parts[3]}"
            return self._api_model(repo_id, parts[4:], query, body)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        return self._error(404, "EntryNotFound", f"no route for {self.command} {path}")

    def _create_repo(self, payload) -> None:
        state = self.server.state
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        if payload.get("type") == "dataset":
            repo_id = f"datasets/{repo_id}"
        url = {"url": f"{self.endpoint}/{repo_id}"}
        if repo_id in state.repos:
            return self._json(409, {**url, "error": "You already created this model repo"})
        repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        repo.refs["main"] = state.new_commit(repo, {".gitattributes": b"*.safetensors filter=lfs\n"}, "initial commit")
        state.repos[repo_id] = repo
        return self._json(200, url)

    def _repo_or_404(self, repo_id: str) -> Optional[Repo]:
        repo = self.server.state.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        return repo

    def _api_model(self, repo_id: str, rest: List[str], query, body: bytes) -> None:
        repo = self._repo_or_404(repo_id)
        if repo is None:
            return
        action = rest[0] if rest else ""
        if self.command == "GET" and action in ("", "revision"):
            revision = "/".join(rest[1:]) or "main"
            sha = repo.resolve(revision)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return self._json(200, {
                "id": repo_id.removeprefix("datasets/"), "modelId": repo_id, "sha": sha, "private": repo.private,
                "siblings": [{"rfilename": p} for p in sorted(repo.commits[sha])],
                "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
            })
        if self.command == "GET" and action == "tree":
            sha = repo.resolve(rest[1] if len(rest) > 1 else "main")
            if sha is None:
                return self._error(404, "RevisionNotFound", "Invalid rev id")
            prefix = "/".join(rest[2:])
            files = [{"type": "file", "oid": git_blob_sha1(c), "size": len(c), "path": p}
                     for p, c in sorted(repo.commits[sha].items()) if p.startswith(prefix)]
            return self._json(200, files)
        if self.command == "POST" and action == "preupload":
            files = repo.files(rest[1] if len(rest) > 1 else "main")
            entries = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                        "oid": git_blob_sha1(files[f["path"]]) if f["path"] in files else None}
                       for f in json.loads(body)["files"]]
            return self._json(200, {"files": entries})
        if self.command == "POST" and action == "commit":
            return self._commit(repo, "/".join(rest[1:]) or "main", body, "create_pr" in query)
        if self.command == "POST" and action == "branch":
            branch = "/".join(rest[1:])
            if branch in repo.refs:
                return self._error(409, "BranchExists", f"Branch {branch} already exists")
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            repo.refs[branch] = repo.resolve(start)
            return self._json(200, {})
        if action == "discussions":
            return self._discussions(repo, rest[1:], body)
        return self._error(404, "EntryNotFound", f"no route for {self.command} {self.path}")

    def _open_pr(self, repo: Repo, title: str, description: str) -> Dict:
        num = len(repo.pull_requests) + 1
        repo.refs[f"refs/pr/{num}"] = repo.refs["main"]
        pr = {"num": num, "title": title, "description": description}
        repo.pull_requests.append(pr)
        return pr

    def _commit(self, repo: Repo, revision: str, body: bytes, create_pr: bool) -> None:
        state = self.server.state
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        if create_pr:
            pr = self._open_pr(repo, header.get("summary", ""), header.get("description", ""))
            revision = f"refs/pr/{pr['num']}"
        sha = repo.resolve(revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        parent = header.get("parentCommit")
        if parent and parent != sha:
            return self._json(412, {"error": "parent commit is not the head of the branch"})
        files = dict(repo.commits[sha])
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif line["key"] == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            elif line["key"] == "lfsFile":
                return self._json(400, {"error": "this test server stores regular files only"})
        new = state.new_commit(repo, files, header.get("summary", ""))
        repo.refs[revision] = new
        out = {"commitUrl": f"{self.endpoint}/{repo.repo_id}/commit/{new}", "commitOid": new}
        if create_pr:
            out["pullRequestUrl"] = f"{self.endpoint}/{repo.repo_id}/discussions/{pr['num']}"
        return self._json(200, out)

    def _discussions(self, repo: Repo, rest: List[str], body: bytes) -> None:
        if self.command == "POST" and not rest:
            payload = json.loads(body or b"{}")
            pr = self._open_pr(repo, payload.get("title", ""), payload.get("description", ""))
            return self._json(200, {"num": pr["num"]})
        if self.command == "GET" and rest:
            num = int(rest[0])
            if not 0 < num <= len(repo.pull_requests):
                return self._error(404, "EntryNotFound", "no such discussion")
            pr = repo.pull_requests[num - 1]
            return self._json(200, {
                "num": num, "title": pr["title"], "author": {"name": "user"}, "createdAt": "2026-01-01T00:00:00.000Z",
                "status": "open", "isPullRequest": True, "repo": {"name": repo.repo_id, "type": "model"},
                "events": [], "changes": {"base": "refs/heads/main"}, "filesWithConflicts": [], "diff": "",
                "conflictingFiles": [], "mergeCommitId": None,
            })
        return self._error(404, "EntryNotFound", "unsupported discussions call")

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        repo = self._repo_or_404(repo_id)
        if repo is None:
            return
        sha = repo.resolve(revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        content = repo.commits[sha].get(filename)
        if content is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist at {revision}", commit=sha)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(content).hexdigest()}"'}
        byte_range = self.headers.get("Range")
        if byte_range and byte_range.startswith("bytes=") and self.command == "GET":
            start = int(byte_range[len("bytes="):].split("-")[0] or 0)
            return self._send(206, content[start:], "application/octet-stream", headers)
        return self._send(200, content, "application/octet-stream", headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class HubServer:
    """``with HubServer() as hub: hub.endpoint`` — a local Hub for the duration of the block."""

    def __init__(self, max_seconds: float = 300.0, max_requests: int = 2000):
        self.state = HubState()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._server.count = 0
        self._server.max_requests = max_requests
        # The client compares URL hosts as strings: returned URLs use exactly this endpoint.
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._server.endpoint = self.endpoint
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._deadline = threading.Timer(max_seconds, self.stop)
        self._deadline.daemon = True

    def start(self) -> "HubServer":
        self._thread.start()
        self._deadline.start()
        return self

    def stop(self) -> None:
        self._deadline.cancel()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- test helpers ---------------------------------------------------------------------------
    def fail(self, status: int, path_contains: str = "", message: str = "injected failure") -> None:
        self.state.failure = Failure(status, path_contains, message)

    def heal(self) -> None:
        self.state.failure = None

    def repo(self, repo_id: str) -> Repo:
        return self.state.repos[repo_id]

    def commits_made(self, repo_id: str) -> int:
        """Commits after the repository's creation."""
        return len(self.repo(repo_id).commit_messages) - 1

    def url(self, repo_id: str, revision: str = "main") -> str:
        return f"{self.endpoint}/{repo_id}/tree/{quote(revision, safe='')}"

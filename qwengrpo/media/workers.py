"""Check media files in worker processes: in parallel, and so that a decoder crash costs one file, not the run.

Each worker is a bare Python process running `files.serve` (PIL, numpy and decord only: it starts in ~0.2 s).
Jobs go to the workers as JSON lines, a few in flight per worker; answers come back in order. A worker that
dies (decord can abort on a corrupt file) or that takes longer than `timeout` on one file fails that file only:
it is replaced and the jobs queued behind it go to another worker.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

FILES = Path(__file__).with_name("files.py")
# Load files.py by path: importing it as `qwengrpo.media.files` would import the package (torch, transformers).
_BOOT = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('qwengrpo_media_files', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module.serve()\n"
)
TIMEOUT_S = 120.0


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


class _Worker:
    def __init__(self) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop) a file, not a pipe: nobody drains it
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(FILES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.inflight: deque[tuple[Any, dict]] = deque()
        self.head_started = time.monotonic()  # when the oldest job in flight became the one being worked on
        self.buffer = b""

    def send(self, key: Any, job: dict) -> None:
        if not self.inflight:
            self.head_started = time.monotonic()
        self.inflight.append((key, job))
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()

    def death_note(self) -> str:
        """Why the worker ended: its exit status and the last line it wrote to stderr."""
        status = self.proc.poll()
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        last = f": {lines[-1][:300]}" if lines else ""
        return f"the decoder crashed (exit status {status}){last}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            stream.close()


class CheckPool:
    """Runs `files.check` jobs in up to `workers` processes; `result(key)` waits for one job's answer.

    Answers are `{"ok": facts}` or `{"error": message}`. Workers start on the first job and stop on `close`.
    """

    def __init__(self, workers: int | None = None, timeout: float = TIMEOUT_S, depth: int = 4) -> None:
        self.size = workers or default_workers()
        self.timeout, self.depth = timeout, depth
        self.queue: deque[tuple[Any, dict]] = deque()
        self.results: dict[Any, dict] = {}
        self.workers: list[_Worker] = []
        self.selector = selectors.DefaultSelector()

    def submit(self, key: Any, job: dict) -> None:
        self.queue.append((key, job))

    def result(self, key: Any) -> dict:
        while key not in self.results:
            self._pump()
        return self.results[key]

    def close(self) -> None:
        for worker in self.workers:
            self.selector.unregister(worker.proc.stdout)
            worker.stop()
        self.workers.clear()
        self.selector.close()

    def __enter__(self) -> CheckPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pump(self) -> None:
        self._dispatch()
        if not any(w.inflight for w in self.workers):
            raise KeyError("waiting for a job that was never submitted")
        deadline = min(w.head_started for w in self.workers if w.inflight) + self.timeout
        for event, _ in self.selector.select(timeout=max(0.0, deadline - time.monotonic())):
            self._read(event.data)
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.inflight and now - worker.head_started > self.timeout:
                self._fail_head(worker, f"checking it took over {self.timeout:.0f} s")

    def _dispatch(self) -> None:
        while self.queue:
            idle = [w for w in self.workers if len(w.inflight) < self.depth]
            if not idle and len(self.workers) < self.size:
                worker = _Worker()
                self.workers.append(worker)
                self.selector.register(worker.proc.stdout, selectors.EVENT_READ, worker)
                idle = [worker]
            if not idle:
                return
            worker = min(idle, key=lambda w: len(w.inflight))
            try:
                worker.send(*self.queue.popleft())
            except BrokenPipeError:
                self._fail_head(worker, worker.death_note())

    def _read(self, worker: _Worker) -> None:
        chunk = os.read(worker.proc.stdout.fileno(), 1 << 16)
        if not chunk:  # the worker died: its current job is the one that killed it
            worker.proc.wait()
            self._fail_head(worker, worker.death_note())
            return
        worker.buffer += chunk
        *lines, worker.buffer = worker.buffer.split(b"\n")
        for line in lines:
            key, _ = worker.inflight.popleft()
            self.results[key] = json.loads(line)
            worker.head_started = time.monotonic()

    def _fail_head(self, worker: _Worker, reason: str) -> None:
        """The job `worker` was on fails with `reason`; the worker is replaced, its other jobs requeued."""
        key, job = worker.inflight.popleft()
        self.results[key] = {"error": f"cannot read {job['kind']} {job['label']}: {reason}"}
        self.queue.extendleft(reversed(worker.inflight))
        self.selector.unregister(worker.proc.stdout)
        self.workers.remove(worker)
        worker.stop()


def check_one(job: dict, timeout: float = TIMEOUT_S) -> dict:
    """One job in a fresh worker: `{"ok": facts}` or `{"error": message}`."""
    with CheckPool(workers=1, timeout=timeout) as pool:
        pool.submit(0, job)
        return pool.result(0)

"""Check workers: a worker that dies (here: SIGKILLed) or stalls on a file (a FIFO nobody writes, as a hung network
mount) fails that one file, by name; every other file is still checked, by a replacement worker."""

from __future__ import annotations

import os
import threading

from media_factory import write_image

from qwengrpo.media.workers import CheckPool


def job(path) -> dict:
    return {"kind": "image", "path": str(path), "label": str(path)}


def test_a_stalled_file_times_out_alone(tmp_path):
    images = [write_image(tmp_path / f"{k}.png", size=(30 + k, 20)) for k in range(6)]
    stalled = tmp_path / "stalled.png"
    os.mkfifo(stalled)
    with CheckPool(workers=2, timeout=2) as pool:
        pool.submit("stalled", job(stalled))
        for k, path in enumerate(images):
            pool.submit(k, job(path))
        answers = {k: pool.result(k) for k in ["stalled", *range(6)]}
    assert answers["stalled"] == {"error": f"cannot read image {stalled}: checking it took over 2 s"}
    assert [answers[k] for k in range(6)] == [{"ok": {"size": [30 + k, 20]}} for k in range(6)]


def test_a_crashed_worker_fails_only_its_file(tmp_path):
    stalled = tmp_path / "stalled.png"
    os.mkfifo(stalled)
    with CheckPool(workers=1, timeout=60) as pool:
        pool.submit("stalled", job(stalled))
        pool.submit("next", job(write_image(tmp_path / "next.png")))
        killer = threading.Timer(1.0, lambda: [worker.proc.kill() for worker in pool.workers])
        killer.start()
        crashed = pool.result("stalled")
        assert pool.result("next") == {"ok": {"size": [64, 48]}}
    assert crashed == {"error": f"cannot read image {stalled}: the decoder crashed (exit status -9)"}

"""`qwengrpo vllm-serve`: a vLLM engine behind four HTTP endpoints, for trainers on other GPUs or machines.

    qwengrpo vllm-serve --model Qwen/Qwen2.5-VL-3B-Instruct --port 8000

`GET /health`, `GET /info` (model, `max_model_len`, media per prompt, weight version), `POST /generate` (requests
with the trainer's encoder outputs, sampling settings; the answer names the weight version that sampled it) and
`POST /weights` (named tensors of one group, loaded in place, and the version they belong to). Bodies are
`qwengrpo.rollout.wire` messages; one request runs at a time. A weight update spans several `/weights` calls (one
per group) and is applied as a whole: no `/generate` runs between its first group and its last (`last: true`), so no
batch is ever sampled by two weight versions; an update a trainer abandons half-way (it died) is superseded by the
next one, and until then nothing samples from it. It binds 127.0.0.1 unless told otherwise: anyone who can reach the
port can replace the model's weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .engine import EngineConfig, VLLMEngine
from .requests import RolloutRequest
from .wire import pack, unpack

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id (the trainer's starting model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--dtype", default="auto", help="weights dtype, e.g. bfloat16; must match the trainer's")
    parser.add_argument("--max-model-len", type=int, default=None, help="prompt + completion tokens per sequence")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--max-images", type=int, default=4, help="images per prompt (Qwen3-VL only)")
    parser.add_argument("--max-videos", type=int, default=1, help="videos per prompt (Qwen3-VL only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs (faster start, slower decode)")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(args.model).model_type
    engine = VLLMEngine(
        EngineConfig(
            model=args.model,
            model_type=model_type,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            gpu_memory_utilization=args.gpu_memory_utilization,
            tensor_parallel_size=args.tensor_parallel_size,
            max_images=args.max_images,
            max_videos=args.max_videos,
            seed=args.seed,
            enforce_eager=args.enforce_eager,
        ),
        in_process=False,
    )
    server = ThreadingHTTPServer((args.host, args.port), _handler(engine))
    # `kill` (SIGTERM) ends it like Ctrl-C: the interpreter then exits normally and vLLM's cleanup stops its engine
    # processes, which the default SIGTERM action would leave running.
    signal.signal(signal.SIGTERM, _interrupt)
    logger.info("vLLM server for %s listening on http://%s:%d", args.model, args.host, server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def _handler(engine: VLLMEngine) -> type[BaseHTTPRequestHandler]:
    # vLLM's offline engine serves one call at a time; `updating` is the version being loaded, group by group, during
    # which no batch is sampled.
    turn = threading.Condition()
    updating: list[int | None] = [None]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":  # the engine process too: a server whose engine died must not look alive
                dead = engine.dead()
                self._reply(
                    *(
                        (b"vLLM's engine process died", "text/plain", HTTPStatus.SERVICE_UNAVAILABLE)
                        if dead
                        else (b"ok", "text/plain")
                    )
                )
            elif self.path == "/info":
                self._reply(json.dumps(engine.info()).encode(), "application/json")
            else:
                self.send_error(HTTPStatus.NOT_FOUND)

        def do_POST(self) -> None:
            body = unpack(self.rfile.read(int(self.headers["Content-Length"])))
            try:
                with turn:
                    if self.path == "/generate":
                        turn.wait_for(lambda: updating[0] is None)
                        requests = [RolloutRequest(**r) for r in body["requests"]]
                        answer = [vars(s) for s in engine.generate(requests, body["sampling"])]
                        self._reply(pack(answer), "application/octet-stream")
                    elif self.path == "/weights":
                        updating[0] = body["version"]  # a new version supersedes one left half-loaded
                        engine.load_weights(zip(body["names"], body["tensors"], strict=True))
                        if body["last"]:
                            engine.version, updating[0] = body["version"], None
                            turn.notify_all()
                        self._reply(b"ok", "text/plain")
                    else:
                        self.send_error(HTTPStatus.NOT_FOUND)
            except Exception as exc:  # the trainer gets the reason, the server keeps serving
                logger.exception("%s failed", self.path)
                self._reply(f"{type(exc).__name__}: {exc}".encode(), "text/plain", HTTPStatus.INTERNAL_SERVER_ERROR)

        def _reply(self, data: bytes, kind: str, status: HTTPStatus = HTTPStatus.OK) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:
            logger.debug(format, *args)

    return Handler

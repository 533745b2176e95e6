"""``serve``: generation over HTTP for applications (Starlette under uvicorn).

``POST /generate`` takes JSON (``valence`` and ``arousal`` in [-1, 1], or ``valence_bin``
and ``arousal_bin``; ``bars`` and/or ``max_new_tokens``; ``seed``, ``temperature``,
``top_k``, ``top_p``, ``guidance``) and returns ``audio/midi`` with headers stating the
bins, the seed, the new tokens and the generation time. ``GET /health`` says the service
is up; ``GET /`` is a small page (a valence-arousal pad, playback with Web Audio, a piano
roll, a download link; no script from the network). The model is loaded once; requests
are generated one at a time in a worker thread, at most ``queue`` wait, and one more gets
503. A bad request gets 422 naming the field.

Needs the extra ``varemi[serve]`` (starlette, uvicorn); imported when called.
"""

from __future__ import annotations

import asyncio
import json
import math
import numbers
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from varemi._base.errors import VaremiError
from varemi.dataset.info import half_width
from varemi.music.tokenizer import DecodeError, decode_music
from varemi.training.errors import MissingExtraError, TrainError, one_line
from varemi.training.generation import (
    Loaded,
    SamplingParams,
    labels_to_bins,
    load_run,
    prefix_ids,
    sample,
)
from varemi.training.model import positions
from varemi.training.run import read_run

FIELDS = {
    "valence": "valence label in [-1, 1] (with arousal)",
    "arousal": "arousal label in [-1, 1] (with valence)",
    "valence_bin": "valence bin (with arousal_bin)",
    "arousal_bin": "arousal bin (with valence_bin)",
    "bars": "stop after N bars",
    "max_new_tokens": "tokens at most",
    "seed": "sampling seed (random when absent; returned in X-Varemi-Seed)",
    "temperature": "softmax temperature",
    "top_k": "top-k (0: off)",
    "top_p": "nucleus mass",
    "guidance": "classifier-free guidance (1: plain, 0: unconditioned)",
}
DEFAULT_BARS = 8


def _require_serve():
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise MissingExtraError(
            f"serve needs starlette and uvicorn ({e.name} is not installed): "
            "pip install 'varemi[serve]'"
        ) from None
    return uvicorn


class RequestError(VaremiError):
    """A bad ``/generate`` request: the field and what is wrong (422)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass
class Job:
    """One checked request."""

    valence_bin: int
    arousal_bin: int
    valence: float | None
    arousal: float | None
    bars: int | None
    sampling: SamplingParams


def _number(body: dict, name: str, kind, low=None, high=None, default=None):
    if name not in body or body[name] is None:
        return default
    v = body[name]
    ok = not isinstance(v, bool) and isinstance(
        v, numbers.Integral if kind is int else numbers.Real
    )
    if not ok or (kind is float and not math.isfinite(v)):
        raise RequestError(name, f"must be {'an integer' if kind is int else 'a finite number'}")
    if (low is not None and v < low) or (high is not None and v > high):
        raise RequestError(name, f"must be in [{low}, {high}], got {v}")
    return kind(v)


def parse_request(body, info: dict, max_bars: int, max_tokens: int) -> Job:
    """Check a ``/generate`` body; the job, or :class:`RequestError` naming the field.

    Args:
        body: The parsed JSON.
        info: The run's ``dataset_info.json``.
        max_bars: The largest ``bars`` allowed.
        max_tokens: The largest ``max_new_tokens`` (the model's room after the prompt).

    Returns:
        The job.

    Raises:
        RequestError: a missing, unknown or bad field.
    """
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise RequestError(unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
    h = half_width(info)
    labels = [body.get("valence") is not None, body.get("arousal") is not None]
    bins = [body.get("valence_bin") is not None, body.get("arousal_bin") is not None]
    if any(labels) and any(bins):
        raise RequestError("valence_bin" if bins[0] else "arousal_bin",
                           "give labels (valence, arousal) or bins, not both")  # fmt: skip
    if any(labels) or not any(bins):
        for name, present in zip(("valence", "arousal"), labels, strict=True):
            if not present:
                raise RequestError(name, "required (a number in [-1, 1])")
        v = _number(body, "valence", float, -1, 1)
        a = _number(body, "arousal", float, -1, 1)
        vb, ab = (int(x) for x in labels_to_bins(info, np.array([[v, a]]))[0])
    else:
        for name, present in zip(("valence_bin", "arousal_bin"), bins, strict=True):
            if not present:
                raise RequestError(name, f"required (an integer in [{-h}, {h}])")
        v = a = None
        vb = _number(body, "valence_bin", int, -h, h)
        ab = _number(body, "arousal_bin", int, -h, h)
    bars = _number(body, "bars", int, 1, max_bars)
    tokens = _number(body, "max_new_tokens", int, 1, max_tokens)
    if bars is None and tokens is None:
        bars = DEFAULT_BARS
    seed = _number(body, "seed", int, 0, 2**32 - 1)
    s = SamplingParams(
        max_new_tokens=tokens or max_tokens,
        temperature=_number(body, "temperature", float, default=1.0),
        top_k=_number(body, "top_k", int, 0, default=50),
        top_p=_number(body, "top_p", float, default=1.0),
        seed=random.randrange(2**32) if seed is None else seed,
        guidance=_number(body, "guidance", float, default=1.0),
    )
    if not s.temperature > 0:
        raise RequestError("temperature", f"must be > 0, got {s.temperature}")
    if not 0 < s.top_p <= 1:
        raise RequestError("top_p", f"must be in (0, 1], got {s.top_p}")
    if not 0 <= s.guidance < math.inf:
        raise RequestError("guidance", f"must be >= 0 and finite, got {s.guidance}")
    return Job(vb, ab, v, a, bars, s)


class Generator:
    """The model, loaded once, and a bounded queue in front of one worker thread.

    Args:
        loaded: The run.
        queue: Requests waiting at most (besides the one being generated).
    """

    def __init__(self, loaded: Loaded, queue: int):
        self.r, self.queue = loaded, queue
        self.pending = 0
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="varemi-generate")
        self.served = 0

    def try_enter(self) -> bool:
        """Take a place in the queue; False when it is full."""
        with self.lock:
            if self.pending > self.queue:
                return False
            self.pending += 1
            return True

    def leave(self) -> None:
        """Give the place back."""
        with self.lock:
            self.pending -= 1
            self.served += 1

    def run(self, job: Job) -> tuple[bytes, dict]:
        """Generate one piece; the MIDI bytes and what was used."""
        r = self.r
        prompt = prefix_ids(r.info, r.special, job.valence_bin, job.arousal_bin)
        t0 = time.perf_counter()
        ids = sample(r, prompt, 1, job.sampling, job.sampling.seed, bars=job.bars)[0]
        seconds = time.perf_counter() - t0
        score = decode_music(r.tokenizer, ids)
        return bytes(score.dumps_midi()), {
            "new_tokens": len(ids),
            "seconds": seconds,
            "notes": int(score.note_num()),
        }


PAGE = (Path(__file__).parent / "serve_page.html").read_text(encoding="utf-8")


def create_app(
    run: str | Path,
    queue: int = 8,
    max_bars: int = 32,
    device: str = "auto",
    allow_unfinished: bool = False,
):
    """The ASGI application of a run (the model is loaded here, once).

    Args:
        run: A finetune run folder.
        queue: Requests waiting at most; one more gets 503.
        max_bars: The largest ``bars`` a request may ask for.
        device: ``auto``, ``cpu`` or ``cuda``.
        allow_unfinished: Serve a run whose training did not finish.

    Returns:
        A Starlette application.
    """
    _require_serve()
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    _check_serve(queue, max_bars)
    loaded = load_run(Path(run), device, allow_unfinished)
    gen = Generator(loaded, queue)
    max_tokens = positions(loaded.model) - (len(prefix_ids(loaded.info, loaded.special, 0, 0)))
    h = half_width(loaded.info)

    async def health(request):
        return JSONResponse(
            {
                "status": "ok",
                "run": str(run),
                "device": str(loaded.device),
                "bins": [-h, h],
                "binning": loaded.info.get("params", {}).get("binning"),
                "pending": gen.pending,
                "queue": queue,
                "served": gen.served,
                "max_bars": max_bars,
                "max_new_tokens": max_tokens,
            }
        )

    async def page(request):
        return HTMLResponse(
            PAGE.replace("{{BINS}}", str(h)).replace("{{MAX_BARS}}", str(max_bars)),
            headers={"Content-Security-Policy": "default-src 'self'; script-src 'self' "
                     "'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                     "media-src 'self' blob:"},
        )  # fmt: skip

    def unprocessable(field: str, message: str):
        return JSONResponse(
            {"detail": [{"loc": ["body", field], "msg": message}], "error": f"{field}: {message}"},
            status_code=422,
        )

    async def generate(request):
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            return unprocessable("body", f"not valid JSON ({e})")
        try:
            job = parse_request(body, loaded.info, max_bars, max_tokens)
        except RequestError as e:
            return unprocessable(e.field, e.message)
        if not gen.try_enter():
            return JSONResponse(
                {"detail": f"busy: {queue} requests are already waiting; retry later"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        try:
            loop = asyncio.get_running_loop()
            midi, used = await loop.run_in_executor(gen.pool, gen.run, job)
        except DecodeError as e:
            return JSONResponse({"detail": f"the piece cannot be decoded: {one_line(e)}"}, 500)
        finally:
            gen.leave()
        headers = {
            "X-Varemi-Valence-Bin": str(job.valence_bin),
            "X-Varemi-Arousal-Bin": str(job.arousal_bin),
            "X-Varemi-Seed": str(job.sampling.seed),
            "X-Varemi-New-Tokens": str(used["new_tokens"]),
            "X-Varemi-Notes": str(used["notes"]),
            "X-Varemi-Generation-Seconds": f"{used['seconds']:.3f}",
            "Content-Disposition": f'attachment; filename="v{job.valence_bin:+d}_a'
            f'{job.arousal_bin:+d}_{job.sampling.seed}.mid"',
        }
        if job.bars is not None:
            headers["X-Varemi-Bars"] = str(job.bars)
        if job.valence is not None:
            headers["X-Varemi-Valence"] = repr(job.valence)
            headers["X-Varemi-Arousal"] = repr(job.arousal)
        return Response(midi, media_type="audio/midi", headers=headers)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/health", health),
            Route("/generate", generate, methods=["POST"]),
        ]
    )
    app.state.generator = gen
    return app


def _check_serve(queue: int, max_bars: int, port: int = 0, host: str = "x") -> None:
    if isinstance(queue, bool) or not isinstance(queue, int) or queue < 0:
        raise TrainError(f"--queue must be an integer >= 0, got {queue}")
    if isinstance(max_bars, bool) or not isinstance(max_bars, int) or max_bars < 1:
        raise TrainError(f"--max-bars must be an integer >= 1, got {max_bars}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise TrainError(f"--port must be in 0..65535, got {port}")
    if not host:
        raise TrainError("--host is empty; give an address such as 127.0.0.1")


def serve(
    run: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    queue: int = 8,
    max_bars: int = 32,
    device: str = "auto",
    allow_unfinished: bool = False,
) -> None:
    """Serve a run over HTTP until interrupted.

    Args:
        run: A finetune run folder.
        host: Address to listen on.
        port: Port (0: any free one).
        queue: Requests waiting at most; one more gets 503.
        max_bars: The largest ``bars`` a request may ask for.
        device: ``auto``, ``cpu`` or ``cuda``.
        allow_unfinished: Serve a run whose training did not finish.

    Raises:
        TrainError: a bad option or run; ``MissingExtraError`` without ``varemi[serve]``.
    """
    _check_serve(queue, max_bars, port, host)
    read_run(Path(run), allow_unfinished=allow_unfinished)
    uvicorn = _require_serve()
    app = create_app(run, queue, max_bars, device, allow_unfinished)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    print(f"serve: {run} on http://{host}:{port}/ (Ctrl-C stops)", file=sys.stderr)
    try:
        server.run()
    except OSError as e:
        raise TrainError(f"--host {host} --port {port}: cannot listen ({e.strerror})") from None

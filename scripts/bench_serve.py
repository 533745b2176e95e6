"""Load benchmark of ``varemi serve``: N concurrent clients on loopback, p50/p95 and req/s.

Trains (or reuses) a ``tiny`` run on the built-in demo, starts ``create_app`` under uvicorn
on 127.0.0.1, and sends ``--requests`` POST /generate from ``--clients`` threads (bounded
by ``--timeout`` seconds in all). 503s (the queue bound) are counted, not timed.

    python scripts/bench_serve.py --clients 8 --requests 64 --bars 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from varemi.music.demo import write_demo_corpus
from varemi.pipeline.build import build
from varemi.pipeline.params import BuildParams
from varemi.training import finetune as ft
from varemi.training.serve import create_app


def _run(work: Path) -> Path:
    run = work / "run"
    if (run / "run.json").is_file():
        return run
    write_demo_corpus(work / "midi")
    build(BuildParams(midi_dir=work / "midi", out=work / "data", tokenizer="builtin",
                      window_size=64, stride=48, min_window_tokens=16, bos=True, quiet=True,
                      cache=False, overwrite=True))  # fmt: skip
    ft.finetune(ft.FinetuneParams(data=work / "data", out=run, model="tiny", max_steps=20,
                                  eval_steps=20, lr=1e-2, warmup=2, patience=0, device="cpu",
                                  quiet=True))  # fmt: skip
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/varemi-bench-serve"))
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--bars", type=int, default=2)
    ap.add_argument("--queue", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    run = _run(a.work)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(run, queue=a.queue, device="cpu")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/generate"
    deadline = time.perf_counter() + a.timeout

    def one(k: int):
        if time.perf_counter() > deadline:
            return None
        body = {"valence": (k % 5) / 2 - 1, "arousal": 1 - (k % 3), "bars": a.bars, "seed": k}
        t0 = time.perf_counter()
        r = httpx.post(url, json=body, timeout=a.timeout)
        return r.status_code, time.perf_counter() - t0, float(r.headers.get(
            "x-varemi-generation-seconds", "nan"))  # fmt: skip

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(a.clients) as pool:
        results = [r for r in pool.map(one, range(a.requests)) if r is not None]
    wall = time.perf_counter() - t0
    server.should_exit = True
    ok = np.array([lat for code, lat, _ in results if code == 200])
    gen = np.array([g for code, _, g in results if code == 200])
    busy = sum(code == 503 for code, _, _ in results)
    print(
        f"{a.clients} clients, {len(results)} requests ({len(ok)} ok, {busy} x 503), "
        f"{a.bars} bars each, tiny model, CPU\n"
        f"latency p50 {np.percentile(ok, 50):.3f} s, p95 {np.percentile(ok, 95):.3f} s; "
        f"generation p50 {np.percentile(gen, 50):.3f} s; {len(ok) / wall:.2f} requests/s "
        f"({wall:.1f} s wall)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

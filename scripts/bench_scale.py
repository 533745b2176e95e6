"""Lakh scale on one machine: build a corpus of N files, measure speed, memory and resume.

    python scripts/bench_scale.py --files 150000            # the full-size run
    python scripts/bench_scale.py --files 10000 --workers 2 # what fits a shared 2-core box
    python scripts/bench_scale.py --files 2500 10000 --no-resume  # memory, two sizes

For each size N:

1. makes a corpus of N MIDI files in a temporary folder by replicating the shared
   corpora (``../shared/corpora/{pop909,vgmidi,miditok_tests}``): copy c of a source
   file is transposed by ``c % 7 - 3`` semitones (drums untouched), delayed by
   ``c // 7 * 7`` ticks and its tempi scaled by ``1 + (c // 7 % 5) / 100``, so every copy's
   bytes differ and the token cache cannot serve one copy for another;
2. builds it with ``python -m varemi build`` (local engine, a fresh token cache):
   files per second, and the peak RSS of the main process and of the largest worker
   (``dataset_info.json`` ``peak_rss_mb``);
3. unless ``--no-resume``: builds it again with another fresh cache, SIGKILLs the main
   build process once half the files are in the cache, then re-runs the same command:
   the re-run's time against the full build's (the token cache should make it cost
   only the remaining files, plus reading and hashing every file once).

Prints one table row per size. Nothing is kept unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpora"
SOURCES = ("pop909", "vgmidi", "miditok_tests")


def source_files() -> list[Path]:
    files = []
    for name in SOURCES:
        folder = SHARED / name
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    if not files:
        sys.exit(f"error: no MIDI file under {SHARED} (the shared corpora are needed)")
    return files


def _copy(args: tuple[str, str, int]) -> bool:
    """Write one perturbed copy; False when symusic cannot read or write it."""
    from symusic import Score

    src, dst, c = args
    try:
        s = Score(src)
        shift = c % 7 - 3
        for tr in s.tracks:
            if not tr.is_drum:
                tr.shift_pitch(shift, inplace=True)
                for note in tr.notes:  # keep pitches valid MIDI after the shift
                    note.pitch = min(127, max(0, note.pitch))
        k = c // 7
        if k:
            s.shift_time(k * 7, inplace=True)
        for tempo in s.tempos:
            tempo.qpm = tempo.qpm * (1 + (k % 5) / 100)
        s.dump_midi(dst)
        return True
    except Exception:
        return False


def make_corpus(folder: Path, n: int, workers: int) -> float:
    """Write ``n`` perturbed copies of the shared corpora into ``folder``; seconds taken."""
    t = time.perf_counter()
    sources = source_files()
    jobs = []
    for i in range(n):
        src = sources[i % len(sources)]
        c = i // len(sources)
        sub = folder / f"{i // 1000:04d}"
        jobs.append((str(src), str(sub / f"{src.stem}-c{c:04d}.mid"), c))
    for sub in {Path(j[1]).parent for j in jobs}:
        sub.mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        ok = sum(pool.imap_unordered(_copy, jobs, chunksize=64))
    if ok < n:
        print(f"note: {n - ok} copies could not be written", file=sys.stderr)
    return time.perf_counter() - t


def build_cmd(midi: Path, out: Path, cache: Path, workers: int) -> list[str]:
    run = ["-m", "varemi"]
    return [
        sys.executable, *run, "build", "--midi-dir", str(midi), "--out", str(out),
        "--tokenizer", "builtin", "--workers", str(workers), "--cache-dir", str(cache),
        "--overwrite", "--quiet",
    ]  # fmt: skip


def run_build(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def cache_entries(cache: Path) -> int:
    n = 0
    if not cache.is_dir():
        return 0
    for sub in os.scandir(cache):
        if sub.is_dir():
            n += sum(1 for e in os.scandir(sub.path) if e.name.endswith(".tok"))
    return n


def kill_half_way(cmd: list[str], cache: Path, n: int) -> tuple[float, int]:
    """Start the build, SIGKILL its main process at n/2 cached files; (seconds, entries)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True)
    while proc.poll() is None and cache_entries(cache) < n // 2:
        time.sleep(0.2)
    if proc.poll() is not None:
        sys.exit("error: the build finished before it could be killed half way")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    elapsed = time.perf_counter() - t
    time.sleep(1.0)
    try:  # its pool workers lose their parent and exit; make sure none is left
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return elapsed, cache_entries(cache)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--files", type=int, nargs="+", default=[150_000], help="corpus sizes")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--work", type=Path, default=None, help="folder for corpora (default: a temp dir)"
    )
    ap.add_argument("--no-resume", action="store_true", help="skip the kill-and-resume run")
    ap.add_argument("--keep", action="store_true", help="keep the corpora and datasets")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="varemi-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n in a.files:
            d = work / f"n{n}"
            midi, out = d / "midi", d / "out"
            shutil.rmtree(d, ignore_errors=True)
            gen = make_corpus(midi, n, a.workers)
            full = run_build(build_cmd(midi, out, d / "cache-full", a.workers))
            info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
            row = {
                "files": n,
                "corpus_s": round(gen, 1),
                "build_s": round(full, 1),
                "files_per_s": round(n / full, 1),
                "in_build_s": info["timings_seconds"]["total"],  # build() itself, no imports
                "rss_main_mb": info["peak_rss_mb"]["main"],
                "rss_worker_mb": info["peak_rss_mb"]["worker"],
                "examples": sum(info["counts"]["examples"].values()),
                "rejected": info["counts"]["files_rejected"],
            }
            if not a.no_resume:
                cmd = build_cmd(midi, d / "out2", d / "cache-resume", a.workers)
                killed_s, cached = kill_half_way(cmd, d / "cache-resume", n)
                for tmp in d.glob(".out2.varemi-tmp-*"):  # what the killed build left
                    shutil.rmtree(tmp, ignore_errors=True)
                resume = run_build(cmd)
                info2 = json.loads((d / "out2" / "dataset_info.json").read_text(encoding="utf-8"))
                row.update(
                    killed_after_s=round(killed_s, 1),
                    cached_at_kill=cached,
                    resume_s=round(resume, 1),
                    resume_in_build_s=info2["timings_seconds"]["total"],
                    resume_vs_full=round(resume / full, 2),
                    resume_cache=info2["cache"].get("hit", 0),
                    resume_rss_main_mb=info2["peak_rss_mb"]["main"],
                    resume_rss_worker_mb=info2["peak_rss_mb"]["worker"],
                )
                row["resume_same_data"] = info2["counts"] == info["counts"] and all(
                    f.read_bytes() == (d / "out2" / f.relative_to(out)).read_bytes()
                    for s in ("train", "val")
                    for f in sorted((out / s).glob("*.arrow"))
                )
            rows.append(row)
            print(json.dumps(row), flush=True)
            if not a.keep:
                shutil.rmtree(d, ignore_errors=True)
    finally:
        if not a.keep and a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    keys = list(rows[0]) if rows else []
    print("\n| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()

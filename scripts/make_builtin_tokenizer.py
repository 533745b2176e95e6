"""Regenerate varemi's built-in tokenizer, python/varemi/data/builtin_tokenizer.json.

The built-in tokenizer (``--tokenizer builtin``) stands in for Natooz/Maestro-REMI-bpe20k
where the hub cannot be reached: the same REMI configuration (varemi.music.tokenizer.
maestro_config), BPE-trained with MidiTok to a small vocabulary on the demo corpus
(varemi.music.demo), which this script writes to a temporary folder first.

Run from the repository root (the environment needs miditok and symusic):

    python scripts/make_builtin_tokenizer.py            # rewrite the packaged file
    python scripts/make_builtin_tokenizer.py --check    # exit 1 if regenerating changes it
    python scripts/make_builtin_tokenizer.py --out /tmp/tok.json --vocab-size 2000

Training takes about a second. The result is deterministic for a given MidiTok and
Hugging Face tokenizers version.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from varemi.music.demo import write_demo_corpus  # noqa: E402
from varemi.music.tokenizer import maestro_config  # noqa: E402

PACKAGED = ROOT / "python" / "varemi" / "data" / "builtin_tokenizer.json"
VOCAB_SIZE = 1000


def build(out: Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """Train the built-in tokenizer on the demo corpus and save it to ``out``."""
    from miditok import REMI

    tokenizer = REMI(maestro_config())
    with tempfile.TemporaryDirectory() as tmp:
        files = write_demo_corpus(Path(tmp))
        tokenizer.train(vocab_size=vocab_size, model="BPE", files_paths=files)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACKAGED, help="file to write")
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    parser.add_argument(
        "--check", action="store_true", help="compare a fresh build with --out, write nothing"
    )
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = build(Path(tmp) / "tokenizer.json", args.vocab_size).read_bytes()
        same = args.out.is_file() and args.out.read_bytes() == fresh
        print(f"{args.out}: {'up to date' if same else 'differs from a fresh build'}")
        return 0 if same else 1
    path = build(args.out, args.vocab_size)
    print(f"wrote {path} ({path.stat().st_size} bytes, vocab_size {args.vocab_size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A content-addressed cache of each file's token ids (``build --cache-dir``).

Users iterate on windows, bins, labels and split far more often than on the
tokenizer, so ``build`` keeps each file's token ids keyed by everything that
determines them: the sha256 of the file's bytes and of the tokenizer, the pitch
policy and range, the track mode, the encoder used (native or MidiTok), ``--key-to-c``
(only when set), the
versions of varemi, MidiTok and symusic, the hash of the native sources baked in at
build time (:func:`encoder_version`) and a hash of the Python sources of exactly the
stages that made the value (:data:`TOKEN_SOURCES`). Computed labels, window labels and
duplicate fingerprints are kept beside them. Every key is composed here, from
everything its value depends on: :func:`token_key`, :func:`label_key`,
:func:`window_label_key`, :func:`fingerprint_key`.

An entry is one small file: a header (magic, its own key, token count, the piece's
duration in minutes, sha256 of the payload) then the little-endian int32 ids. Entries are written
to a temporary file and renamed into place, so concurrent builds sharing a cache
never see half an entry; a damaged or truncated entry fails its checksum and is
recomputed, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

from varemi import _native
from varemi._base.fileio import write_bytes
from varemi._base.version import __version__
from varemi.music.fingerprint import FINGERPRINT_VERSION

_MAGIC = b"VRMTOK2\0"
_HEADER = struct.Struct("<8s32sQd32s")  # magic, key, n tokens, minutes, sha256 of payload


def default_cache_dir() -> Path:
    """The user cache folder: ``$XDG_CACHE_HOME/varemi`` or ``~/.cache/varemi``.

    Returns:
        The folder path (not created).
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "varemi"


def usable_cache_dir(folder: str | os.PathLike) -> str | None:
    """The cache folder if it can be created and written, else None with one warning line.

    The cache is best effort: a read-only home, ``--cache-dir`` under a file or an
    ``XDG_CACHE_HOME`` that cannot hold folders only cost speed.

    Args:
        folder: The cache folder (created if missing).

    Returns:
        ``str(folder)``, or None when it is unusable (a ``warning:`` line on stderr).
    """
    import sys

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        print(
            f"warning: the token cache {folder} is unusable ({e.strerror or e}); "
            "building without it",
            file=sys.stderr,
        )
        return None
    return str(folder)


def cache_key(file_sha256: str, *parts: object) -> str:
    """Combine a file's content hash with the other parts of a key (the one key recipe).

    Args:
        file_sha256: Hex sha256 of the MIDI file's bytes.
        *parts: Tokenizer hash, pitch policy and range, track mode, versions.

    Returns:
        A hex key.
    """
    h = hashlib.sha256(file_sha256.encode())
    for p in parts:
        h.update(b"\0" + repr(p).encode())
    return h.hexdigest()


PACKAGE = Path(__file__).resolve().parents[1]
"""The installed ``varemi`` package folder (its Python sources are part of the keys)."""

TOKEN_SOURCES = (
    "corpus/job.py",
    "core/kernels.py",
    "core/pitch.py",
    "core/reference.py",
    "music/augment.py",
    "music/encoder/__init__.py",
    "music/encoder/bpe.py",
    "music/encoder/remi.py",
    "music/files.py",
)
"""The Python sources of the stages that turn a file's bytes into token ids: reading and
size limits, the per-file job, augmentation, tracks and pitches, the encoder."""

LABEL_SOURCES = (
    "corpus/job.py",
    "core/kernels.py",
    "core/label_features.py",
    "core/reference.py",
    "labelling/fitted.py",
    "labelling/heuristic.py",
    "music/augment.py",
    "music/files.py",
)
"""The Python sources of the stages that turn a file's bytes into its computed labels: the
features, the heuristic and the fitted labeller (not the label CSV reader or writer: a
change there never costs a cached label)."""

WINDOW_LABEL_SOURCES = (
    "core/kernels.py",
    "core/params.py",
    "core/reference.py",
    "corpus/job.py",
    "music/tokenizer.py",
)
"""The Python sources of the stages that turn token ids into window labels (windows,
decoding); the token and label sources enter through the token and label keys."""

BEAT_LABEL_SOURCES = ("music/tokenizer.py",)
"""The sources a file's label in beats (``--label-time beats``) adds to the label sources:
the decoder of its token ids (whose own sources enter through the token key)."""

SECONDS_WINDOW_SOURCES = ("music/timing.py",)
"""The sources window labels in seconds (``--label-time seconds``) add to the window label
sources: the file's tempo map given to each decoded window."""

KEY_SOURCES = ("core/label_features.py", "music/key.py")
"""The sources ``build --key-to-c`` adds to the token and label keys: the key estimate and
its profiles (keys without the option never hold them, so they stay what they were)."""

FINGERPRINT_SOURCES = ("corpus/job.py", "music/fingerprint.py")
"""The Python sources of a file's duplicate fingerprint."""


@functools.cache
def source_hash(paths: tuple[str, ...]) -> str:
    """A hash of the named Python sources of the package (relative paths, in order).

    Args:
        paths: Paths relative to the package folder (:data:`PACKAGE`).

    Returns:
        Hex sha256 over each path and its bytes.
    """
    h = hashlib.sha256()
    for rel in paths:
        h.update(rel.encode() + b"\0" + (PACKAGE / rel).read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def encoder_version() -> str:
    """What determines token ids besides the inputs and the Python sources.

    The native build is named by the hash of its sources that ``build.rs`` bakes in
    (``varemi._native.source_hash``), so a changed native kernel never reuses stale
    values even when varemi's version number stays the same.

    Returns:
        One line naming varemi's version, the native source hash, MidiTok's and
        symusic's versions.
    """
    native = getattr(_native, "source_hash", "unknown")
    return (
        f"varemi {__version__}; native {native}; "
        f"miditok {version('miditok')}; symusic {version('symusic')}"
    )


def token_key(
    file_sha256: str,
    tokenizer_sha256: str,
    pitch_policy: str,
    pitch_range: tuple[int, int],
    tracks: str,
    encoder: str,
    augmentation: str = "",
    key_to_c: bool = False,
) -> str:
    """The key of a file's token ids: everything that determines them.

    Args:
        file_sha256: Hex sha256 of the MIDI file's bytes.
        tokenizer_sha256: Hex sha256 of the base tokenizer's file.
        pitch_policy: ``clamp``, ``fold`` or ``drop``.
        pitch_range: Inclusive pitch range.
        tracks: ``merge`` or ``first``.
        encoder: ``native`` or ``miditok`` (what computes the ids).
        augmentation: An augmented copy's name (``t+2``); empty for the original.
        key_to_c: ``build --key-to-c`` (the file moved to a tonic of C first): the key
            also holds :data:`KEY_SOURCES`; without it the key is the one it always was.

    Returns:
        A hex key, also covering :func:`encoder_version` and the sources of
        :data:`TOKEN_SOURCES`.
    """
    extra = ("augmentation", augmentation) if augmentation else ()
    if key_to_c:
        extra += ("key_to_c", source_hash(KEY_SOURCES))
    return cache_key(
        file_sha256,
        tokenizer_sha256,
        pitch_policy,
        tuple(pitch_range),
        tracks,
        encoder,
        encoder_version(),
        source_hash(TOKEN_SOURCES),
        *extra,
    )


def labeller_version(labeller_sha256: str = "") -> str:
    """What determines a file's computed labels besides its bytes and the jitter.

    Args:
        labeller_sha256: Hex sha256 of the ``--labeller`` file; ``""`` for the heuristic.

    Returns:
        The sources of :data:`LABEL_SOURCES`, the native build (its label-features
        kernel) and the labeller (the heuristic, or the fitted labeller's file), as one
        hex hash.
    """
    labeller = ("fitted", labeller_sha256) if labeller_sha256 else ("heuristic",)
    return cache_key(source_hash(LABEL_SOURCES), encoder_version(), *labeller)


def label_key(
    file_sha256: str,
    labeller: str,
    jitter: float,
    seed: int,
    name: str,
    augmentation: str = "",
    time: str = "seconds",
    token_key: str = "",
    key_to_c: bool = False,
) -> str:
    """The key of a file's computed labels (``build`` without ``--labels``).

    Args:
        file_sha256: Hex sha256 of the MIDI file's bytes.
        labeller: :func:`labeller_version` (computed once per build, sent to the workers).
        jitter: ``--jitter``.
        seed: ``--jitter-seed``.
        name: The file's relative path (the noise depends on it; ignored without jitter).
        augmentation: An augmented copy's name; empty for the original.
        time: ``seconds`` (from the parsed file, with its tempo map: the key it always
            had) or ``beats`` (from the file's token ids decoded, ``--label-time
            beats``: the key also holds ``token_key`` and :data:`BEAT_LABEL_SOURCES`).
        token_key: The file's :func:`token_key` (used with ``beats`` only).
        key_to_c: ``build --key-to-c`` (the file labelled after its move to a tonic of
            C): the key also holds :data:`KEY_SOURCES`; without it the key is the one it
            always was.

    Returns:
        A hex key.
    """
    extra = ("augmentation", augmentation) if augmentation else ()
    if time != "seconds":
        extra += ("time", time, token_key, source_hash(BEAT_LABEL_SOURCES))
    if key_to_c:
        extra += ("key_to_c", source_hash(KEY_SOURCES))
    return cache_key(file_sha256, "labels", labeller, jitter, seed, name if jitter else "", *extra)


def window_label_key(
    token_key: str, label_key: str, windows: tuple[int, int, int], time: str = "beats"
) -> str:
    """The key of a file's window labels (``--label-scope window``).

    Window labels are decoded from the token ids and labelled like files, so the key
    holds the file's token key (bytes, tokenizer, pitch policy and range, tracks,
    encoder, augmentation, their sources) and label key (labeller, jitter, and the
    file label's time base: a window without notes takes the file's label), the window
    parameters, and the sources of :data:`WINDOW_LABEL_SOURCES`.

    Args:
        token_key: The file's :func:`token_key`.
        label_key: The file's :func:`label_key`.
        windows: ``(window_size, stride, min_window_tokens)``.
        time: ``beats`` (decoded windows as they are: the key it always had) or
            ``seconds`` (given the file's tempo map, ``--label-time seconds``: the key
            also holds :data:`SECONDS_WINDOW_SOURCES`).

    Returns:
        A hex key.
    """
    extra = ("time", time, source_hash(SECONDS_WINDOW_SOURCES)) if time != "beats" else ()
    return cache_key(
        token_key,
        "window_labels",
        label_key,
        tuple(windows),
        source_hash(WINDOW_LABEL_SOURCES),
        encoder_version(),
        *extra,
    )


def fingerprint_key(token_key: str) -> str:
    """The key of a file's duplicate-detection fingerprint, beside its token ids.

    Args:
        token_key: The file's :func:`token_key`.

    Returns:
        A hex key.
    """
    return cache_key(
        token_key, "fingerprint", FINGERPRINT_VERSION, source_hash(FINGERPRINT_SOURCES)
    )


class TokenCache:
    """Token ids on disk, one file per key, safe to share between concurrent builds."""

    def __init__(self, folder: str | os.PathLike) -> None:
        """Open (and create) a cache folder.

        Args:
            folder: Where entries live.
        """
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.tok"

    def get(self, key: str) -> tuple[np.ndarray, float] | None:
        """Look an entry up.

        Args:
            key: From :func:`cache_key`.

        Returns:
            ``(token ids, minutes)``, or None when absent.

        Raises:
            DamagedEntry: the entry exists but is truncated or corrupt (it is removed).
        """
        path = self._path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise DamagedEntry(f"{path}: {e}") from e
        if len(raw) < _HEADER.size:
            self._discard(path)
            raise DamagedEntry(f"{path}: truncated header")
        magic, stored_key, n, minutes, digest = _HEADER.unpack_from(raw)
        payload = raw[_HEADER.size :]
        if (
            magic != _MAGIC
            or stored_key != bytes.fromhex(key)  # an entry copied over another's
            or len(payload) != 4 * n
            or hashlib.sha256(payload).digest() != digest
        ):
            self._discard(path)
            raise DamagedEntry(f"{path}: bad magic, key, length or checksum")
        return np.frombuffer(payload, dtype="<i4").astype(np.int32, copy=False), minutes

    def put(self, key: str, tokens: np.ndarray, minutes: float) -> None:
        """Store an entry atomically (write a temporary file, then rename).

        Args:
            key: From :func:`cache_key`.
            tokens: int32 token ids.
            minutes: The piece's duration, so ``--max-minutes`` still applies on a hit.
        """
        payload = np.ascontiguousarray(tokens, dtype="<i4").tobytes()
        digest = hashlib.sha256(payload).digest()
        header = _HEADER.pack(_MAGIC, bytes.fromhex(key), len(tokens), float(minutes), digest)
        self._write(self._path(key), header + payload)

    def get_json(self, key: str) -> dict | None:
        """Look up a small JSON entry (a file's labels and features).

        Args:
            key: From :func:`cache_key`.

        Returns:
            The stored object, or None when absent.

        Raises:
            DamagedEntry: the entry exists but does not parse (it is removed).
        """
        path = self.folder / key[:2] / f"{key}.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise DamagedEntry(f"{path}: {e}") from e
        try:
            obj = json.loads(text)
        except ValueError as e:
            self._discard(path)
            raise DamagedEntry(f"{path}: {e}") from e
        if (
            not isinstance(obj, dict)
            or obj.get("key") != key
            or not isinstance(obj.get("value"), dict)
        ):
            self._discard(path)
            raise DamagedEntry(f"{path}: not an entry for this key")
        return obj["value"]

    def put_json(self, key: str, obj: dict) -> None:
        """Store a small JSON entry atomically.

        Args:
            key: From :func:`cache_key`.
            obj: A JSON-serialisable object.
        """
        entry = {"key": key, "value": obj}  # the key inside: a copied entry is caught
        self._write(self.folder / key[:2] / f"{key}.json", json.dumps(entry).encode())

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass


class DamagedEntry(Exception):
    """A cache entry that failed its checks; the caller recomputes it."""

"""A small, deterministic corpus of generated piano pieces spanning the valence-arousal plane.

The pieces are written by code only (tonal chord progressions with a melody in a key), so
the project can build, test and demonstrate a dataset without downloading anything. Each
piece varies the musical features that listeners associate with emotion:

- arousal: slow tempo with sparse notes versus fast tempo with dense figuration, and soft
  versus loud dynamics;
- valence: major versus minor mode, and high versus low register.

:data:`DEMO_PIECES` describes every piece, including the valence and arousal it was
designed to express (a hint for demos, not a listener rating). :func:`write_demo_corpus`
writes them as MIDI files, identical byte for byte on every run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TICKS_PER_BEAT = 480
PITCH_LOW, PITCH_HIGH = 21, 108

_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}

# Eight-bar progressions as scale degrees (0 = tonic), each ending on a cadence.
_PROGRESSIONS = {
    "major": (
        (0, 4, 5, 3, 0, 3, 4, 0),  # I V vi IV I IV V I
        (5, 3, 0, 4, 5, 1, 4, 0),  # vi IV I V vi ii V I
    ),
    "minor": (
        (0, 3, 4, 0, 5, 3, 4, 0),  # i iv V i VI iv V i
        (0, 5, 2, 6, 3, 0, 4, 0),  # i VI III VII iv i V i
    ),
}
_FORM = (0, 0, 1, 0)  # sections A A B A, repeated

# Register: (melody centre, accompaniment centre, bass centre) as MIDI pitches.
_REGISTERS = {"low": (55, 45, 33), "mid": (72, 55, 40), "high": (86, 67, 52)}
_BASE_VELOCITY = {"soft": 38, "loud": 100}

# Melody rhythms per beat, in sixteenths: each pattern fills one beat (4 sixteenths).
_SPARSE_BEAT_RHYTHMS = ((4,), (4,), (2, 2), (8,))  # (8,) = a half note over two beats
_DENSE_BEAT_RHYTHMS = ((2, 2), (1, 1, 2), (2, 1, 1), (1, 1, 1, 1), (3, 1))


@dataclass(frozen=True)
class DemoPiece:
    """One generated piece of the demo corpus.

    Attributes:
        path: Relative path of the MIDI file, POSIX separators.
        tempo: Tempo in quarter notes per minute.
        density: ``"sparse"`` (quarter and half notes, block chords) or ``"dense"``
            (eighths and sixteenths, Alberti figuration).
        dynamics: ``"soft"`` or ``"loud"``.
        mode: ``"major"`` or ``"minor"``.
        register: ``"low"``, ``"mid"`` or ``"high"``.
        tonic: Pitch class of the key's tonic (0 = C).
        bars: Number of bars.
        beats_per_bar: 4 (4/4) or 3 (3/4).
        two_hands: Right and left hand on two tracks (otherwise one track).
        seed: Seed of the melody generator.
    """

    path: str
    tempo: float
    density: str
    dynamics: str
    mode: str
    register: str
    tonic: int
    bars: int
    beats_per_bar: int = 4
    two_hands: bool = False
    seed: int = 0

    @property
    def valence(self) -> float:
        """Intended valence in [-1, 1]: the mode, nudged by the register."""
        nudge = {"low": -0.2, "mid": 0.0, "high": 0.2}[self.register]
        return (0.6 if self.mode == "major" else -0.6) + nudge

    @property
    def arousal(self) -> float:
        """Intended arousal in [-1, 1]: tempo and density, nudged by the dynamics."""
        speed = 0.6 if self.density == "dense" else -0.6
        return speed + (0.3 if self.dynamics == "loud" else -0.3)


def _grid_pieces() -> list[DemoPiece]:
    pieces = []
    index = 0
    for mode in ("major", "minor"):
        for speed in ("slow", "fast"):
            for dynamics in ("soft", "loud"):
                for register in ("low", "high"):
                    fast = speed == "fast"
                    pieces.append(
                        DemoPiece(
                            path=f"{mode}/{speed}_{dynamics}_{mode}_{register}.mid",
                            tempo=(144.0 + 8 * (index % 4)) if fast else (60.0 + 6 * (index % 4)),
                            density="dense" if fast else "sparse",
                            dynamics=dynamics,
                            mode=mode,
                            register=register,
                            tonic=(index * 7) % 12,  # walk the circle of fifths
                            bars=64 if fast else 96,
                            two_hands=index % 4 == 1,
                            seed=100 + index,
                        )
                    )
                    index += 1
    return pieces


DEMO_PIECES: tuple[DemoPiece, ...] = (
    *_grid_pieces(),
    DemoPiece(
        "waltz_moderate_loud_major_mid.mid",
        120.0,
        "dense",
        "loud",
        "major",
        "mid",
        tonic=7,
        bars=72,
        beats_per_bar=3,
        two_hands=True,
        seed=200,
    ),
    DemoPiece(
        "nocturne_slow_soft_minor_mid.mid",
        56.0,
        "sparse",
        "soft",
        "minor",
        "mid",
        tonic=1,
        bars=88,
        two_hands=True,
        seed=201,
    ),
    DemoPiece(
        "march_fast_loud_major_mid.mid",
        132.0,
        "dense",
        "loud",
        "major",
        "mid",
        tonic=10,
        bars=64,
        two_hands=True,
        seed=202,
    ),
    DemoPiece(
        "lullaby_slow_soft_major_mid.mid",
        72.0,
        "sparse",
        "soft",
        "major",
        "mid",
        tonic=5,
        bars=112,
        beats_per_bar=3,
        seed=203,
    ),
)
"""Every piece of the demo corpus, in the order they are written."""


def _nearest(pitch_class: int, target: int) -> int:
    """The pitch with ``pitch_class`` nearest to ``target`` (ties go down)."""
    low = target - ((target - pitch_class) % 12)
    return low if target - low <= low + 12 - target else low + 12


def _chord(piece: DemoPiece, degree: int) -> list[int]:
    """Pitch classes of the triad on a scale degree (root, third, fifth).

    In minor, the dominant (V) takes the raised leading tone, as in harmonic minor.
    """
    scale = list(_SCALES[piece.mode])
    if piece.mode == "minor" and degree == 4:
        scale[6] = 11
    return [(piece.tonic + scale[(degree + k) % 7]) % 12 for k in (0, 2, 4)]


def _scale_pitches(piece: DemoPiece, degree: int, low: int, high: int) -> list[int]:
    """Every pitch of the key in ``low..high``; leading tone raised on a minor dominant."""
    scale = list(_SCALES[piece.mode])
    if piece.mode == "minor" and degree == 4:
        scale[6] = 11
    classes = {(piece.tonic + s) % 12 for s in scale}
    return [p for p in range(low, high + 1) if p % 12 in classes]


def _velocity(base: int, accent: int, rng: random.Random) -> int:
    return max(1, min(127, base + accent + rng.randint(-6, 6)))


def _bar_degrees(piece: DemoPiece) -> list[int]:
    """The chord (scale degree) of every bar: sections of the form, ending on the tonic."""
    degrees = []
    for bar in range(piece.bars):
        section = _FORM[(bar // 8) % len(_FORM)]
        degrees.append(_PROGRESSIONS[piece.mode][section][bar % 8])
    degrees[-1] = 0
    return degrees


def _melody(piece: DemoPiece, degrees: list[int], rng: random.Random) -> list[tuple]:
    """Right hand: a stepwise melody that lands on chord tones on the beats."""
    centre = _REGISTERS[piece.register][0]
    base = _BASE_VELOCITY[piece.dynamics] + 8
    rhythms = _DENSE_BEAT_RHYTHMS if piece.density == "dense" else _SPARSE_BEAT_RHYTHMS
    sixteenth = TICKS_PER_BEAT // 4
    notes = []
    pitch = _nearest(piece.tonic, centre)
    for bar, degree in enumerate(degrees):
        bar_start = bar * piece.beats_per_bar * TICKS_PER_BEAT
        chord = _chord(piece, degree)
        scale = _scale_pitches(piece, degree, centre - 9, centre + 9)
        last_bar = bar == len(degrees) - 1
        beat = 0
        while beat < piece.beats_per_bar:
            rhythm = rhythms[rng.randrange(len(rhythms))]
            if sum(rhythm) > 4 * (piece.beats_per_bar - beat) or last_bar:
                rhythm = (4 * (piece.beats_per_bar - beat),)  # fill the bar
            time = bar_start + beat * TICKS_PER_BEAT
            for k, length in enumerate(rhythm):
                if k == 0:  # on the beat: the chord tone nearest a small step away
                    goal = pitch + rng.choice((-3, -2, 0, 2, 3))
                    goal = min(max(goal, centre - 7), centre + 7)
                    pitch = min((_nearest(pc, goal) for pc in chord), key=lambda p: abs(p - goal))
                else:  # off the beat: a neighbouring scale tone
                    step = rng.choice((-1, 1))
                    i = min(range(len(scale)), key=lambda j: abs(scale[j] - pitch))
                    pitch = scale[min(max(i + step, 0), len(scale) - 1)]
                if last_bar:
                    pitch = _nearest(piece.tonic, pitch)
                accent = 6 if beat == 0 and k == 0 else 0
                notes.append((time, length * sixteenth, pitch, _velocity(base, accent, rng)))
                time += length * sixteenth
            beat += sum(rhythm) // 4
    return notes


def _accompaniment(piece: DemoPiece, degrees: list[int], rng: random.Random) -> list[tuple]:
    """Left hand: a held bass note under a broken chord in eighths (sparse) or sixteenths (dense).

    The last bar is a held tonic chord.
    """
    _, chord_centre, bass_centre = _REGISTERS[piece.register]
    base = _BASE_VELOCITY[piece.dynamics] - 8
    bar_ticks = piece.beats_per_bar * TICKS_PER_BEAT
    notes = []
    for bar, degree in enumerate(degrees):
        start = bar * bar_ticks
        root, third, fifth = _chord(piece, degree)
        bass = _nearest(root, bass_centre)
        low, middle, high = sorted(_nearest(pc, chord_centre) for pc in (root, third, fifth))
        notes.append((start, bar_ticks, bass, _velocity(base, 6, rng)))
        if bar == len(degrees) - 1:
            notes += [(start, bar_ticks, p, _velocity(base, 0, rng)) for p in (low, middle, high)]
            continue
        if piece.density == "sparse":  # eighths rising and falling: low middle high middle
            step, figure = TICKS_PER_BEAT // 2, (low, middle, high, middle)
        else:  # Alberti bass in sixteenths: low high middle high
            step, figure = TICKS_PER_BEAT // 4, (low, high, middle, high)
        for k in range(1, bar_ticks // step):  # the bass note sounds on the downbeat
            accent = 4 if k % 4 == 0 else 0
            notes.append((start + k * step, step, figure[k % 4], _velocity(base, accent, rng)))
    return notes


def _track(name: str, notes: list[tuple]):
    from symusic import Note, Track

    notes = sorted(notes)
    columns = zip(*notes, strict=True)
    time, duration, pitch, velocity = (np.array(col, dtype=np.int32) for col in columns)
    track = Track(name=name, program=0)
    track.notes = Note.from_numpy(
        time, duration, pitch.astype(np.int8), velocity.astype(np.int8), ttype="tick"
    )
    return track


def make_score(piece: DemoPiece):
    """Generate one piece as a :class:`symusic.Score` (480 ticks per quarter note).

    Args:
        piece: The piece to generate.

    Returns:
        The score: one piano track, or a right-hand and a left-hand track.
    """
    from symusic import Score, Tempo, TimeSignature

    rng = random.Random(piece.seed)
    degrees = _bar_degrees(piece)
    right = _melody(piece, degrees, rng)
    left = _accompaniment(piece, degrees, rng)
    pitches = [n[2] for n in right + left]
    if min(pitches) < PITCH_LOW or max(pitches) > PITCH_HIGH:
        raise AssertionError(f"{piece.path}: pitch outside {PITCH_LOW}..{PITCH_HIGH}")

    score = Score(TICKS_PER_BEAT)
    score.tempos.append(Tempo(0, qpm=piece.tempo))
    score.time_signatures.append(TimeSignature(0, piece.beats_per_bar, 4))
    if piece.two_hands:
        score.tracks.append(_track("Right hand", right))
        score.tracks.append(_track("Left hand", left))
    else:
        score.tracks.append(_track("Piano", right + left))
    return score


def write_demo_corpus(folder: Path | str) -> list[Path]:
    """Write the demo corpus (:data:`DEMO_PIECES`) as MIDI files under ``folder``.

    The files are identical byte for byte on every run and platform: the only randomness
    is a :class:`random.Random` seeded per piece.

    Args:
        folder: Destination folder; created if missing. Existing files of the same names
            are overwritten.

    Returns:
        The paths written, in :data:`DEMO_PIECES` order.
    """
    folder = Path(folder)
    paths = []
    for piece in DEMO_PIECES:
        path = folder / piece.path
        path.parent.mkdir(parents=True, exist_ok=True)
        make_score(piece).dump_midi(path)
        paths.append(path)
    return paths

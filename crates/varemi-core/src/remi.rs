//! REMI base-token encoding (MidiTok 3.1 `REMI.encode(score, encode_ids=False)`), pure
//! Rust on slices.
//!
//! One call encodes one track of a `symusic.Score` (its note arrays) into the base ids
//! (before BPE) that MidiTok gives for that track, for the REMI configurations that
//! `varemi.music.encoder.remi.NativeREMI` accepts: no time signatures (every bar is 4/4), no tempo,
//! chord, rest, program, pedal, pitch-bend, control-change or pitch-interval tokens.
//! The vocabulary tables (token ids per position, pitch, velocity and duration) are
//! prepared in Python from the tokenizer itself, so the ids are the tokenizer's own.
//!
//! The steps are MidiTok's, in its order (`preprocess_score`, `_preprocess_notes`,
//! `_score_to_tokens`, `_create_track_events`, `REMI._add_time_events`):
//!
//! 1. time resampling to the tokenizer's resolution, as `symusic.Score.resample(tpq,
//!    min_dur=1)` does it (symusic 0.6: `round(t * (new_tpq / tpq))` in float64, half
//!    away from zero; durations the same, then at least 1), skipped when the score
//!    already has that resolution;
//! 2. removal of the notes outside the pitch range (a track left without notes is
//!    dropped: [`encode_track`] returns `None`);
//! 3. velocities and durations moved to the nearest value of the vocabulary
//!    (`miditok.utils.np_get_closest`: ties go to the larger value; the differences are
//!    computed in int32 arithmetic, as numpy does);
//! 4. optional duplicate removal (`remove_duplicated_notes`: sort by time, pitch,
//!    duration, velocity, keep the first note of each time and pitch);
//! 5. a stable sort of the notes by onset (MidiTok sorts the events by time);
//! 6. `Bar` tokens up to each new onset's bar, a `Position` token per onset, then
//!    `Pitch`, `Velocity`, `Duration` per note.
//!
//! Whatever MidiTok would refuse or compute differently (a resampled time outside int32,
//! a negative onset, which MidiTok turns into a `KeyError`) is reported as a
//! [`Fallback`]: the caller then runs MidiTok itself, so the result is always MidiTok's.

use std::fmt;

/// Why a track cannot be encoded here: the caller must let MidiTok encode the score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// The score's ticks per quarter is not positive.
    BadTicksPerQuarter(i64),
    /// A resampled time or duration falls outside int32 (symusic raises).
    ResampleOverflow,
    /// A note starts before tick 0 (MidiTok emits a `Position` token it does not have).
    NegativeOnset(i64),
    /// A note's end (time + duration) falls outside int32.
    EndOverflow,
    /// The arrays of one track have different lengths.
    Lengths,
    /// A kept note's pitch has no token in the vocabulary (MidiTok raises `KeyError`).
    MissingPitchToken(i32),
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::BadTicksPerQuarter(tpq) => {
                write!(f, "ticks per quarter must be positive, got {tpq}")
            }
            Fallback::ResampleOverflow => {
                write!(f, "a resampled time or duration falls outside int32")
            }
            Fallback::NegativeOnset(t) => write!(f, "a note starts at a negative tick ({t})"),
            Fallback::EndOverflow => write!(f, "a note ends past the int32 tick range"),
            Fallback::Lengths => write!(f, "time, duration, pitch and velocity lengths differ"),
            Fallback::MissingPitchToken(p) => write!(f, "pitch {p} has no token in the vocabulary"),
        }
    }
}

/// A refused table (raised as `ValueError`): the Python side builds them, so this is a
/// programming error, never bad music.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableError(pub String);

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The pitch tokens of one kind of track (`Pitch_N`, or `PitchDrum_N` for drums).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PitchTable {
    /// Lowest pitch kept, inclusive.
    pub low: i32,
    /// `ids[p - low]` is the token id of pitch `p`, or -1 when the vocabulary lacks it
    /// (a tokenizer saved before MidiTok 3.0.6 with `pitch_range` (21, 109) has no
    /// `Pitch_109`); `high = low + ids.len() - 1`.
    pub ids: Vec<i32>,
}

/// Nearest-value lookup table: sorted values and the token id of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueTable {
    /// Non-decreasing values (velocities, or durations in ticks at the tokenizer's
    /// resolution).
    pub values: Vec<i32>,
    /// Token id of each value.
    pub ids: Vec<i32>,
}

impl ValueTable {
    fn check(&self, name: &str) -> Result<(), TableError> {
        if self.values.is_empty() {
            return Err(TableError(format!("{name} table is empty")));
        }
        if self.values.len() != self.ids.len() {
            return Err(TableError(format!(
                "{name} values and ids differ in length"
            )));
        }
        if self.values.windows(2).any(|w| w[0] > w[1]) {
            return Err(TableError(format!("{name} values must be non-decreasing")));
        }
        Ok(())
    }

    /// Index of the value MidiTok's `np_get_closest` picks for `value`.
    ///
    /// `searchsorted(values, value, side="left")`, then the previous index when it is
    /// strictly closer (or when `value` is above every value); the differences are int32
    /// as numpy computes them (`int32 - int32` wraps).
    pub fn closest(&self, value: i32) -> usize {
        let values = &self.values;
        let n = values.len();
        let idx = values.partition_point(|&v| v < value);
        let prev = values[idx.saturating_sub(1)];
        let cur = values[idx.min(n - 1)];
        let dist = |v: i32| i64::from(value.wrapping_sub(v)).abs();
        if idx == n || dist(prev) < dist(cur) {
            idx - 1
        } else {
            idx
        }
    }
}

/// Everything the encoder needs from the tokenizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemiTables {
    /// Ticks per quarter of the tokenizer (`config.max_num_pos_per_beat`): scores are
    /// resampled to it, and one tick is one position.
    pub tpq: i32,
    /// Id of `Bar_None`.
    pub bar_id: i32,
    /// Id of `Bar_End`, emitted before every bar but the first (`use_bar_end_tokens`).
    pub bar_end_id: Option<i32>,
    /// Add the bars up to the last note's end (`add_trailing_bars`).
    pub trailing_bars: bool,
    /// `position_ids[k]` is the id of `Position_k`, for k in 0..4*tpq (a 4/4 bar).
    pub position_ids: Vec<i32>,
    /// Pitch tables, selected per track.
    pub pitches: Vec<PitchTable>,
    /// Velocities (`None` when `use_velocities` is off).
    pub velocities: Option<ValueTable>,
    /// Durations at the tokenizer's resolution.
    pub durations: ValueTable,
    /// `config.remove_duplicated_notes`.
    pub remove_duplicated_notes: bool,
}

impl RemiTables {
    /// Checks the tables' consistency.
    ///
    /// # Errors
    /// A [`TableError`] naming the first inconsistency.
    pub fn check(&self) -> Result<(), TableError> {
        if self.tpq < 1 {
            return Err(TableError(format!(
                "tokenizer resolution must be positive, got {}",
                self.tpq
            )));
        }
        let per_bar = usize::try_from(self.tpq)
            .ok()
            .and_then(|t| t.checked_mul(4))
            .ok_or_else(|| TableError("tokenizer resolution too large".into()))?;
        if self.position_ids.len() != per_bar {
            return Err(TableError(format!(
                "expected {per_bar} position ids (4 beats of {} positions), got {}",
                self.tpq,
                self.position_ids.len()
            )));
        }
        for (i, p) in self.pitches.iter().enumerate() {
            if p.ids.is_empty() || p.low < 0 || p.low + p.ids.len() as i32 - 1 > 127 {
                return Err(TableError(format!(
                    "pitch table {i} must cover a range within 0..127"
                )));
            }
        }
        if let Some(v) = &self.velocities {
            v.check("velocity")?;
        }
        self.durations.check("duration")?;
        if self.durations.values[0] < 1 {
            return Err(TableError("durations must be at least 1 tick".into()));
        }
        Ok(())
    }
}

/// One track's notes, as `symusic` `track.notes.numpy()` gives them.
#[derive(Clone, Copy, Debug)]
pub struct Notes<'a> {
    /// Onsets in ticks.
    pub time: &'a [i32],
    /// Durations in ticks.
    pub duration: &'a [i32],
    /// MIDI pitches.
    pub pitch: &'a [i8],
    /// Velocities.
    pub velocity: &'a [i8],
}

/// What the track needs besides its notes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackOptions {
    /// The score's ticks per quarter.
    pub score_tpq: i64,
    /// Index of the pitch table in [`RemiTables::pitches`].
    pub pitch_table: usize,
    /// Whether the track's program has `Duration` tokens
    /// (`config.use_note_duration_programs`).
    pub use_durations: bool,
}

/// One note after preprocessing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Note {
    time: i32,
    duration: i32,
    pitch: i32,
    velocity: i32,
    /// Index of the duration in the duration table, when durations are used.
    duration_idx: usize,
    /// Index of the velocity in the velocity table, when velocities are used.
    velocity_idx: usize,
}

/// `symusic` 0.6 resampling of one tick value: `round(value * (new / old))` in float64,
/// half away from zero; an error when the result leaves int32. To stay on the safe side
/// of symusic's own range check, values within a tick of the int32 bounds fall back too.
fn resample(value: i32, factor: f64) -> Result<i32, Fallback> {
    let x = (f64::from(value) * factor).round();
    if x.abs() >= f64::from(i32::MAX) - 1.0 {
        return Err(Fallback::ResampleOverflow);
    }
    Ok(x as i32)
}

/// Encodes one track into MidiTok's REMI base ids.
///
/// Returns `Ok(None)` when MidiTok drops the track (no note left in the pitch range),
/// else the ids.
///
/// # Errors
/// A [`Fallback`] when MidiTok must encode the score itself.
///
/// # Panics
/// If `options.pitch_table` is not an index of `tables.pitches` (checked by the
/// wrapper).
pub fn encode_track(
    notes: Notes<'_>,
    options: TrackOptions,
    tables: &RemiTables,
) -> Result<Option<Vec<i32>>, Fallback> {
    let n = notes.time.len();
    if notes.duration.len() != n || notes.pitch.len() != n || notes.velocity.len() != n {
        return Err(Fallback::Lengths);
    }
    if options.score_tpq < 1 {
        return Err(Fallback::BadTicksPerQuarter(options.score_tpq));
    }
    let pitch_table = &tables.pitches[options.pitch_table];
    let low = pitch_table.low;
    let high = low + pitch_table.ids.len() as i32 - 1;
    let resampling = i64::from(tables.tpq) != options.score_tpq;
    let factor = f64::from(tables.tpq) / options.score_tpq as f64;

    let mut kept: Vec<Note> = Vec::with_capacity(n);
    for i in 0..n {
        let (mut time, mut duration) = (notes.time[i], notes.duration[i]);
        if resampling {
            // symusic resamples every note, whatever its pitch
            time = resample(time, factor)?;
            duration = resample(duration, factor)?.max(1);
        }
        let pitch = i32::from(notes.pitch[i]);
        if pitch < low || pitch > high {
            continue;
        }
        kept.push(Note {
            time,
            duration,
            pitch,
            velocity: i32::from(notes.velocity[i]),
            duration_idx: 0,
            velocity_idx: 0,
        });
    }
    if kept.is_empty() {
        return Ok(None);
    }
    if let Some(velocities) = &tables.velocities {
        for note in &mut kept {
            note.velocity_idx = velocities.closest(note.velocity);
            note.velocity = velocities.values[note.velocity_idx];
        }
    }
    if options.use_durations {
        for note in &mut kept {
            note.duration_idx = tables.durations.closest(note.duration);
            note.duration = tables.durations.values[note.duration_idx];
        }
    }
    if tables.remove_duplicated_notes {
        kept.sort_by_key(|n| (n.time, n.pitch, n.duration, n.velocity));
        kept.dedup_by(|b, a| a.time == b.time && a.pitch == b.pitch);
    }
    // MidiTok sorts the events by time, stably: notes keep their order within an onset.
    kept.sort_by_key(|n| n.time);
    let first = kept[0].time;
    if first < 0 {
        return Err(Fallback::NegativeOnset(i64::from(first)));
    }
    let mut last_end = 0i64;
    for note in &kept {
        let end = i64::from(note.time) + i64::from(note.duration);
        if end > i64::from(i32::MAX) {
            return Err(Fallback::EndOverflow);
        }
        last_end = last_end.max(end);
    }

    let ticks_per_bar = i64::from(tables.tpq) * 4;
    let per_note = 2 + usize::from(tables.velocities.is_some());
    let mut ids = Vec::with_capacity(kept.len() * per_note + 2 * kept.len().min(1 << 16));
    let mut current_bar: i64 = -1;
    let mut bar_tick: i64 = 0;
    let mut previous_tick: i64 = -1;
    let push_bars = |ids: &mut Vec<i32>, current_bar: &mut i64, until: i64| {
        let target = until.div_euclid(ticks_per_bar);
        while *current_bar < target {
            *current_bar += 1;
            if let Some(end) = tables.bar_end_id {
                if *current_bar > 0 {
                    ids.push(end);
                }
            }
            ids.push(tables.bar_id);
        }
    };
    for note in &kept {
        let time = i64::from(note.time);
        if time != previous_tick {
            let before = current_bar;
            push_bars(&mut ids, &mut current_bar, time);
            if current_bar != before {
                bar_tick = current_bar * ticks_per_bar;
            }
            // 0 <= time - bar_tick < ticks_per_bar: the onset lies in the current bar
            ids.push(tables.position_ids[(time - bar_tick) as usize]);
            previous_tick = time;
        }
        let pitch_id = pitch_table.ids[(note.pitch - low) as usize];
        if pitch_id < 0 {
            return Err(Fallback::MissingPitchToken(note.pitch));
        }
        ids.push(pitch_id);
        if let Some(velocities) = &tables.velocities {
            ids.push(velocities.ids[note.velocity_idx]);
        }
        if options.use_durations {
            ids.push(tables.durations.ids[note.duration_idx]);
        }
    }
    if tables.trailing_bars && last_end > previous_tick {
        push_bars(&mut ids, &mut current_bar, last_end);
    }
    Ok(Some(ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ids chosen to read easily: Bar 1, Bar_End 2, Position_k 100+k, Pitch_p 1000+p,
    // Velocity index i 200+i, Duration index i 300+i.
    fn tables(tpq: i32) -> RemiTables {
        RemiTables {
            tpq,
            bar_id: 1,
            bar_end_id: None,
            trailing_bars: false,
            position_ids: (0..4 * tpq).map(|k| 100 + k).collect(),
            pitches: vec![PitchTable {
                low: 21,
                ids: (21..=108).map(|p| 1000 + p).collect(),
            }],
            velocities: Some(ValueTable {
                values: vec![31, 63, 95, 127],
                ids: vec![200, 201, 202, 203],
            }),
            durations: ValueTable {
                values: (1..=4 * tpq).collect(),
                ids: (0..4 * tpq).map(|i| 300 + i).collect(),
            },
            remove_duplicated_notes: false,
        }
    }

    fn opts(score_tpq: i64) -> TrackOptions {
        TrackOptions {
            score_tpq,
            pitch_table: 0,
            use_durations: true,
        }
    }

    fn encode(
        time: &[i32],
        duration: &[i32],
        pitch: &[i8],
        velocity: &[i8],
        options: TrackOptions,
        tables: &RemiTables,
    ) -> Result<Option<Vec<i32>>, Fallback> {
        encode_track(
            Notes {
                time,
                duration,
                pitch,
                velocity,
            },
            options,
            tables,
        )
    }

    #[test]
    fn tables_check() {
        assert_eq!(tables(8).check(), Ok(()));
        let mut t = tables(8);
        t.position_ids.pop();
        assert!(t.check().is_err());
        let mut t = tables(8);
        t.durations.values.swap(0, 1);
        assert!(t.check().is_err());
        let mut t = tables(8);
        t.durations.values[0] = 0;
        assert!(t.check().is_err());
    }

    #[test]
    fn closest_matches_np_get_closest() {
        let t = ValueTable {
            values: vec![7, 15, 23, 23, 31],
            ids: vec![0, 1, 2, 3, 4],
        };
        // below, above, exact, ties go up, duplicates: the first of equal values
        assert_eq!(t.closest(-5), 0);
        assert_eq!(t.closest(100), 4);
        assert_eq!(t.closest(15), 1);
        assert_eq!(t.closest(11), 1);
        assert_eq!(t.closest(10), 0);
        assert_eq!(t.closest(19), 2);
        assert_eq!(t.closest(23), 2);
        assert_eq!(t.closest(27), 4);
        assert_eq!(t.closest(26), 3);
        // int32 wrap-around of the differences, as numpy computes them
        let t = ValueTable {
            values: vec![i32::MIN, i32::MAX],
            ids: vec![0, 1],
        };
        assert_eq!(t.closest(-5), 0);
        assert_eq!(t.closest(5), 1);
        assert_eq!(t.closest(i32::MIN), 0);
        assert_eq!(t.closest(i32::MAX), 1);
    }

    #[test]
    fn one_note_per_bar() {
        let t = tables(8);
        // tpq already 8: one bar is 32 ticks
        let ids = encode(&[0, 40], &[8, 4], &[60, 62], &[100, 60], opts(8), &t)
            .unwrap()
            .unwrap();
        assert_eq!(
            ids,
            vec![1, 100, 1060, 202, 307, 1, 108, 1062, 201, 303],
            "Bar Pos0 Pitch Vel Dur, Bar Pos8 ..."
        );
    }

    #[test]
    fn empty_bars_and_chords_keep_note_order() {
        let t = tables(8);
        let ids = encode(
            &[70, 70, 3],
            &[1, 1, 1],
            &[64, 60, 50],
            &[127, 127, 127],
            opts(8),
            &t,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            ids,
            vec![1, 103, 1050, 203, 300, 1, 1, 106, 1064, 203, 300, 1060, 203, 300]
        );
    }

    #[test]
    fn resampling_rounds_half_away_from_zero() {
        let t = tables(8);
        // 480 tpq: 30 ticks -> 0.5 -> 1; 89 -> 1.48 -> 1; duration 10 -> 0.17 -> 0 -> 1
        let ids = encode(&[30, 89], &[10, 10], &[60, 60], &[63, 63], opts(480), &t)
            .unwrap()
            .unwrap();
        assert_eq!(ids, vec![1, 101, 1060, 201, 300, 1060, 201, 300]);
    }

    #[test]
    fn pitch_filter_and_empty_track() {
        let t = tables(8);
        assert_eq!(
            encode(&[0, 1], &[1, 1], &[20, 109], &[1, 1], opts(8), &t),
            Ok(None)
        );
        assert_eq!(encode(&[], &[], &[], &[], opts(8), &t), Ok(None));
        let ids = encode(&[0, 1], &[1, 1], &[20, 108], &[1, 1], opts(8), &t)
            .unwrap()
            .unwrap();
        assert_eq!(ids, vec![1, 101, 1108, 200, 300]);
    }

    #[test]
    fn duplicates_removed_when_asked() {
        let mut t = tables(8);
        t.remove_duplicated_notes = true;
        let ids = encode(
            &[0, 0, 0],
            &[4, 2, 2],
            &[60, 60, 59],
            &[127, 127, 31],
            opts(8),
            &t,
        )
        .unwrap()
        .unwrap();
        // sorted by (time, pitch, duration, velocity); the second 60 is dropped
        assert_eq!(ids, vec![1, 100, 1059, 200, 301, 1060, 203, 301]);
    }

    #[test]
    fn no_velocities_no_durations_bar_end_trailing() {
        let mut t = tables(8);
        t.velocities = None;
        t.bar_end_id = Some(2);
        t.trailing_bars = true;
        let options = TrackOptions {
            use_durations: false,
            ..opts(8)
        };
        let ids = encode(&[33], &[64], &[60], &[1], options, &t)
            .unwrap()
            .unwrap();
        // bars 0 and 1, the note at position 1, then trailing bars up to tick 97 (bar 3)
        assert_eq!(ids, vec![1, 2, 1, 101, 1060, 2, 1, 2, 1]);
    }

    #[test]
    fn fallbacks() {
        let t = tables(8);
        assert_eq!(
            encode(&[-1], &[1], &[60], &[1], opts(8), &t),
            Err(Fallback::NegativeOnset(-1))
        );
        assert_eq!(
            encode(&[i32::MAX / 2], &[1], &[60], &[1], opts(1), &t),
            Err(Fallback::ResampleOverflow)
        );
        assert_eq!(
            encode(&[0], &[1], &[60], &[1], opts(0), &t),
            Err(Fallback::BadTicksPerQuarter(0))
        );
        assert_eq!(
            encode(&[0], &[1, 2], &[60], &[1], opts(8), &t),
            Err(Fallback::Lengths)
        );
        let mut missing = tables(8);
        missing.pitches[0].ids[108 - 21] = -1;
        assert_eq!(
            encode(&[0], &[1], &[108], &[1], opts(8), &missing),
            Err(Fallback::MissingPitchToken(108))
        );
        assert!(encode(&[0], &[1], &[107], &[1], opts(8), &missing).is_ok());
        assert_eq!(
            encode(&[i32::MAX - 1], &[5], &[60], &[1], opts(8), &t),
            Err(Fallback::EndOverflow)
        );
    }
}

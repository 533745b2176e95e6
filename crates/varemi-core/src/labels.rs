//! The musical features behind varemi's valence/arousal labels, over note arrays.
//!
//! The specification is `varemi.core.label_features.features_reference` (numpy); this module
//! computes the same 19 features, in the order of `varemi.core.label_features.FEATURE_NAMES`, in one
//! pass over slices. Every discrete decision (onset grouping, the notes sounding at an
//! onset, the segment of a note, the pedal that holds a note) is made with the same
//! float64 operations as the twin, so the two agree exactly on those; sums may differ
//! in the last bits because numpy adds pairwise.

use std::fmt;
use std::sync::OnceLock;

/// Onsets closer than this (seconds) count as one onset.
pub const ONSET_MERGE_S: f64 = 0.03;
/// Rates are taken over at least this many seconds.
pub const MIN_SPAN_S: f64 = 1.0;
/// MIDI's tempo when a file sets none.
pub const DEFAULT_BPM: f64 = 120.0;
/// Sounding lengths are clipped to [MIN_DURATION_S, MAX_DURATION_S] before their log.
pub const MIN_DURATION_S: f64 = 1.0 / 32.0;
/// See [`MIN_DURATION_S`].
pub const MAX_DURATION_S: f64 = 8.0;
/// Neutral pseudo-onsets in the triad balance.
pub const TRIAD_PRIOR: f64 = 10.0;
/// Length (seconds) of the local-key segments.
pub const SEGMENT_S: f64 = 8.0;
/// A histogram this close to flat (relative to its largest bin) fits no key.
pub const FLAT_HISTOGRAM: f64 = 1e-9;
/// How many features [`features`] returns.
pub const N_FEATURES: usize = 19;

/// Krumhansl & Kessler (1982) probe-tone key profiles, tonic first.
pub const KK_MAJOR: [f64; 12] = [
    6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
];
/// See [`KK_MAJOR`].
pub const KK_MINOR: [f64; 12] = [
    6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
];

/// Inputs the features cannot be computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelInputError {
    /// No note at all.
    NoNotes,
    /// Arrays that must have one length do not.
    Lengths(&'static str),
    /// Track offsets that are not 0, non-decreasing, ending at the array's length.
    Offsets(&'static str),
}

impl fmt::Display for LabelInputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoNotes => write!(f, "label features need at least one note"),
            Self::Lengths(what) => write!(f, "{what} must all have the same length"),
            Self::Offsets(what) => write!(
                f,
                "{what} must start at 0, never decrease and end at the number of entries"
            ),
        }
    }
}

/// A score's notes, pedals and tempos, in seconds (see `varemi.core.label_features.NoteArrays`).
pub struct NoteArrays<'a> {
    pub time: &'a [f64],
    pub duration: &'a [f64],
    pub pitch: &'a [i64],
    pub velocity: &'a [f64],
    pub note_tracks: &'a [i64],
    pub pedal_time: &'a [f64],
    pub pedal_duration: &'a [f64],
    pub pedal_tracks: &'a [i64],
    pub tempo_time: &'a [f64],
    pub tempo_qpm: &'a [f64],
}

fn check_offsets(offsets: &[i64], n: usize, what: &'static str) -> Result<(), LabelInputError> {
    let ok = offsets.first() == Some(&0)
        && offsets.windows(2).all(|w| w[0] <= w[1])
        && usize::try_from(*offsets.last().unwrap_or(&-1)).ok() == Some(n);
    if ok {
        Ok(())
    } else {
        Err(LabelInputError::Offsets(what))
    }
}

impl NoteArrays<'_> {
    fn check(&self) -> Result<(), LabelInputError> {
        let n = self.time.len();
        if [self.duration.len(), self.pitch.len(), self.velocity.len()]
            .iter()
            .any(|&m| m != n)
        {
            return Err(LabelInputError::Lengths(
                "time, duration, pitch and velocity",
            ));
        }
        if self.pedal_time.len() != self.pedal_duration.len() {
            return Err(LabelInputError::Lengths("pedal_time and pedal_duration"));
        }
        if self.tempo_time.len() != self.tempo_qpm.len() {
            return Err(LabelInputError::Lengths("tempo_time and tempo_qpm"));
        }
        if n == 0 {
            return Err(LabelInputError::NoNotes);
        }
        check_offsets(self.note_tracks, n, "note_tracks")?;
        check_offsets(self.pedal_tracks, self.pedal_time.len(), "pedal_tracks")?;
        if self.note_tracks.len() != self.pedal_tracks.len() {
            return Err(LabelInputError::Lengths("note_tracks and pedal_tracks"));
        }
        Ok(())
    }
}

/// `numpy.median`: the middle value, or the mean of the two middle values.
fn median(values: &mut [f64]) -> f64 {
    let n = values.len();
    let (below, mid, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let mid = *mid;
    if n % 2 == 1 {
        mid
    } else {
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + mid) / 2.0
    }
}

/// Sorts ascending. A stable sort: note times come in a few sorted runs (one per
/// track), which it merges in linear time.
fn sort(values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
}

/// How many of the sorted `values` are <= `x` (`searchsorted(side="right")`).
fn count_le(values: &[f64], x: f64) -> usize {
    values.partition_point(|&v| v <= x)
}

/// numpy's sum of 12 values (pairwise: eight accumulators, then the rest in order).
fn sum12(a: &[f64; 12]) -> f64 {
    let r = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    ((r + a[8]) + a[9] + a[10]) + a[11]
}

/// The 12 rotations of a profile (tonic C..B), centred, and their norms.
fn rotations(profile: &[f64; 12]) -> ([[f64; 12]; 12], [f64; 12]) {
    let mut rz = [[0.0; 12]; 12];
    let mut norms = [0.0; 12];
    for k in 0..12 {
        let mut row = [0.0; 12];
        for (i, v) in row.iter_mut().enumerate() {
            *v = profile[(i + 12 - k) % 12];
        }
        let mean = sum12(&row) / 12.0;
        for v in &mut row {
            *v -= mean;
        }
        norms[k] = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        rz[k] = row;
    }
    (rz, norms)
}

/// Best Pearson correlation of `hist` with the rotations `rz` (0 for a flat histogram).
fn best_correlation(hist: &[f64; 12], rz: &[[f64; 12]; 12], norms: &[f64; 12]) -> f64 {
    let mean = sum12(hist) / 12.0;
    let mut hz = [0.0; 12];
    for (z, h) in hz.iter_mut().zip(hist) {
        *z = h - mean;
    }
    let norm = hz.iter().map(|v| v * v).sum::<f64>().sqrt();
    let largest = hist.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    if norm <= FLAT_HISTOGRAM * largest {
        return 0.0;
    }
    let mut best = f64::NEG_INFINITY;
    for (row, rn) in rz.iter().zip(norms) {
        let dot: f64 = row.iter().zip(&hz).map(|(r, h)| r * h).sum();
        best = best.max(dot / (rn * norm));
    }
    best
}

struct Keys {
    major: ([[f64; 12]; 12], [f64; 12]),
    minor: ([[f64; 12]; 12], [f64; 12]),
}

impl Keys {
    fn new() -> Self {
        Keys {
            major: rotations(&KK_MAJOR),
            minor: rotations(&KK_MINOR),
        }
    }

    fn correlations(&self, hist: &[f64; 12]) -> (f64, f64) {
        (
            best_correlation(hist, &self.major.0, &self.major.1),
            best_correlation(hist, &self.minor.0, &self.minor.1),
        )
    }
}

fn pitch_class(pitch: i64) -> usize {
    // rem_euclid(12) is in 0..12, so the cast cannot truncate.
    pitch.rem_euclid(12) as usize
}

/// Each note's sounding length in one track: a release under the pedal lasts until the
/// pedal is lifted.
fn sounding(
    onset: &[f64],
    duration: &[f64],
    pedal_time: &[f64],
    pedal_duration: &[f64],
) -> Vec<f64> {
    let mut order: Vec<usize> = (0..pedal_time.len()).collect();
    order.sort_by(|&a, &b| pedal_time[a].total_cmp(&pedal_time[b])); // stable, as numpy's
    let down: Vec<f64> = order.iter().map(|&i| pedal_time[i]).collect();
    let mut up = Vec::with_capacity(order.len());
    let mut held_until = f64::NEG_INFINITY;
    for &i in &order {
        held_until = held_until.max(pedal_time[i] + pedal_duration[i].max(0.0));
        up.push(held_until);
    }
    onset
        .iter()
        .zip(duration)
        .map(|(&t, &d)| {
            let offset = t + d;
            let k = count_le(&down, offset);
            let end = if k > 0 && up[k - 1] > offset {
                up[k - 1]
            } else {
                offset
            };
            end - t
        })
        .collect()
}

/// The tempo map's mean over [start, end], each tempo weighted by the seconds it lasts.
fn time_weighted_bpm(times: &[f64], qpm: &[f64], start: f64, end: f64) -> f64 {
    if times.is_empty() {
        return DEFAULT_BPM;
    }
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|&a, &b| times[a].total_cmp(&times[b]));
    let t: Vec<f64> = order.iter().map(|&i| times[i]).collect();
    let q: Vec<f64> = order.iter().map(|&i| qpm[i]).collect();
    let mut total_weight = 0.0;
    let mut total = 0.0;
    for i in 0..t.len() {
        // numpy's clip: max, then min (f64::clamp would panic on start > end or NaN)
        let seg_start = t[i].max(start).min(end);
        let next = t.get(i + 1).copied().unwrap_or(f64::INFINITY);
        let seg_end = next.max(start).min(end);
        let w = seg_end - seg_start;
        total_weight += w;
        total += w * q[i];
    }
    if total_weight <= 0.0 {
        let k = count_le(&t, start);
        return q[k.saturating_sub(1)];
    }
    total / total_weight
}

/// For each set of sounding pitch classes (a 12-bit mask): bit 0 set when it holds a
/// major triad, bit 1 when it holds a minor triad.
fn triad_table() -> &'static [u8; 4096] {
    static TABLE: OnceLock<[u8; 4096]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [0u8; 4096];
        for (mask, entry) in table.iter_mut().enumerate() {
            for root in 0..12 {
                let fifth = (1usize << root) | (1 << ((root + 7) % 12));
                let major = fifth | (1 << ((root + 4) % 12));
                let minor = fifth | (1 << ((root + 3) % 12));
                if mask & major == major {
                    *entry |= 1;
                }
                if mask & minor == minor {
                    *entry |= 2;
                }
            }
        }
        table
    })
}

/// How many onset groups hold a major triad, and a minor one, among their sounding notes.
///
/// A note sounds at a group starting at `g` when it starts at or before
/// `g + ONSET_MERGE_S` and ends after it. Groups ascend, so one sweep over the notes
/// sorted by start and by end keeps the count of sounding notes per pitch class.
fn triad_counts(groups: &[f64], time: &[f64], offsets: &[f64], pitch: &[i64]) -> (usize, usize) {
    let classes: Vec<usize> = pitch.iter().map(|&p| pitch_class(p)).collect();
    let by_time = |t: &[f64]| {
        let mut order: Vec<usize> = (0..t.len()).collect();
        order.sort_by(|&a, &b| t[a].total_cmp(&t[b])); // stable: linear on sorted runs
        order
    };
    let (starts, ends) = (by_time(time), by_time(offsets));
    let table = triad_table();
    let mut sounding = [0i64; 12];
    let (mut si, mut ei) = (0, 0);
    let (mut n_major, mut n_minor) = (0, 0);
    for &g in groups {
        let probe = g + ONSET_MERGE_S;
        while si < starts.len() && time[starts[si]] <= probe {
            sounding[classes[starts[si]]] += 1;
            si += 1;
        }
        while ei < ends.len() && offsets[ends[ei]] <= probe {
            sounding[classes[ends[ei]]] -= 1;
            ei += 1;
        }
        let mask = (0..12).fold(0usize, |m, c| m | (usize::from(sounding[c] > 0) << c));
        n_major += usize::from(table[mask] & 1);
        n_minor += usize::from(table[mask] >> 1);
    }
    (n_major, n_minor)
}

/// The mode (major minus minor best correlation) and the best major correlation of each
/// segment, each averaged with the segments' note weights: `(local_mode, local_major)`.
fn local_keys(time: &[f64], pitch: &[i64], weights: &[f64], start: f64, keys: &Keys) -> (f64, f64) {
    let seg: Vec<usize> = time
        .iter()
        // times >= start, so the floor is >= 0 and the cast is exact
        .map(|&t| ((t - start) / SEGMENT_S).floor() as usize)
        .collect();
    let n_seg = seg.iter().max().map_or(0, |&m| m + 1);
    let mut hists = vec![[0.0f64; 12]; n_seg];
    for ((&s, &p), &w) in seg.iter().zip(pitch).zip(weights) {
        hists[s][pitch_class(p)] += w;
    }
    let (mut total, mut total_major, mut weight) = (0.0, 0.0, 0.0);
    for hist in &hists {
        let w = sum12(hist);
        if w > 0.0 {
            let (major, minor) = keys.correlations(hist);
            total += w * (major - minor);
            total_major += w * major;
            weight += w;
        }
    }
    if weight > 0.0 {
        (total / weight, total_major / weight)
    } else {
        (0.0, 0.0)
    }
}

/// Median over notes of sounding length / gap to the next onset of its track, in [0, 2].
fn articulation(tracks: &[(usize, usize)], time: &[f64], sounding: &[f64]) -> f64 {
    let mut ratios = Vec::new();
    for &(lo, hi) in tracks {
        let onset = &time[lo..hi];
        let mut distinct = onset.to_vec();
        sort(&mut distinct);
        distinct.dedup();
        for (i, &t) in onset.iter().enumerate() {
            let nxt = count_le(&distinct, t + ONSET_MERGE_S);
            if nxt < distinct.len() {
                let gap = distinct[nxt] - t;
                ratios.push((sounding[lo + i] / gap).clamp(0.0, 2.0));
            }
        }
    }
    if ratios.is_empty() {
        1.0
    } else {
        median(&mut ratios)
    }
}

fn bounds(offsets: &[i64]) -> Vec<(usize, usize)> {
    // Offsets were checked: non-negative, non-decreasing, within the arrays.
    offsets
        .windows(2)
        .map(|w| (w[0] as usize, w[1] as usize))
        .collect()
}

/// The 19 features of `varemi.core.label_features.FEATURE_NAMES`, in that order.
///
/// # Errors
///
/// [`LabelInputError`] for no notes, arrays of different lengths or bad offsets.
pub fn features(a: &NoteArrays<'_>) -> Result<[f64; N_FEATURES], LabelInputError> {
    a.check()?;
    let (time, dur, pitch, vel) = (a.time, a.duration, a.pitch, a.velocity);
    let n = time.len();
    let start = time.iter().copied().fold(f64::INFINITY, f64::min);
    let end = time
        .iter()
        .zip(dur)
        .map(|(t, d)| t + d)
        .fold(f64::NEG_INFINITY, f64::max);
    let span = (end - start).max(MIN_SPAN_S);

    let tracks = bounds(a.note_tracks);
    let pedals = bounds(a.pedal_tracks);
    let mut sound = Vec::with_capacity(n);
    for (&(lo, hi), &(plo, phi)) in tracks.iter().zip(&pedals) {
        sound.extend(sounding(
            &time[lo..hi],
            &dur[lo..hi],
            &a.pedal_time[plo..phi],
            &a.pedal_duration[plo..phi],
        ));
    }

    let mut onsets = time.to_vec();
    sort(&mut onsets);
    onsets.dedup();
    let mut groups = Vec::with_capacity(onsets.len());
    groups.push(onsets[0]);
    for w in onsets.windows(2) {
        if w[1] - w[0] > ONSET_MERGE_S {
            groups.push(w[1]);
        }
    }
    let mut ioi: Vec<f64> = groups.windows(2).map(|w| w[1] - w[0]).collect();

    let ones;
    let weights: &[f64] = if dur.iter().sum::<f64>() > 0.0 {
        dur
    } else {
        ones = vec![1.0; n];
        &ones
    };
    let mut hist = [0.0f64; 12];
    for (&p, &w) in pitch.iter().zip(weights) {
        hist[pitch_class(p)] += w;
    }
    let keys = Keys::new();
    let (major, minor) = keys.correlations(&hist);
    let offsets: Vec<f64> = time.iter().zip(dur).map(|(t, d)| t + d).collect();
    let (n_major, n_minor) = triad_counts(&groups, time, &offsets, pitch);
    let log_duration = sound
        .iter()
        .map(|s| s.clamp(MIN_DURATION_S, MAX_DURATION_S).log2())
        .sum::<f64>()
        / n as f64;
    let weight_sum: f64 = weights.iter().sum();
    #[allow(clippy::cast_precision_loss)] // pitches are small integers
    let pitch_mean = pitch
        .iter()
        .zip(weights)
        .map(|(&p, &w)| p as f64 * w)
        .sum::<f64>()
        / weight_sum;
    let ioi_median = if ioi.is_empty() {
        span
    } else {
        median(&mut ioi)
    };
    let (local_mode, local_major) = local_keys(time, pitch, weights, start, &keys);
    let velocity_min = vel.iter().copied().fold(f64::INFINITY, f64::min);
    let velocity_max = vel.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut durations = dur.to_vec();
    #[allow(clippy::cast_precision_loss)] // counts far below 2**52
    let (n_f, n_groups, n_maj, n_min) = (
        n as f64,
        groups.len() as f64,
        n_major as f64,
        n_minor as f64,
    );
    Ok([
        end - start,
        n_f,
        time_weighted_bpm(a.tempo_time, a.tempo_qpm, start, end),
        n_f / span,
        n_groups / span,
        ioi_median,
        median(&mut durations),
        log_duration,
        articulation(&tracks, time, &sound),
        vel.iter().sum::<f64>() / n_f,
        pitch_mean,
        major,
        minor,
        major - minor,
        major.max(minor),
        (n_maj - n_min) / (n_maj + n_min + TRIAD_PRIOR),
        local_mode,
        local_major,
        velocity_max - velocity_min,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrays<'a>(
        time: &'a [f64],
        duration: &'a [f64],
        pitch: &'a [i64],
        velocity: &'a [f64],
        tracks: &'a [i64],
        no_pedal: &'a [i64],
    ) -> NoteArrays<'a> {
        NoteArrays {
            time,
            duration,
            pitch,
            velocity,
            note_tracks: tracks,
            pedal_time: &[],
            pedal_duration: &[],
            pedal_tracks: no_pedal,
            tempo_time: &[],
            tempo_qpm: &[],
        }
    }

    #[test]
    fn quarter_notes_at_120() {
        let time: Vec<f64> = (0..8).map(|i| f64::from(i) * 0.5).collect();
        let dur = [0.5; 8];
        let pitch = [60; 8];
        let vel = [64.0; 8];
        let f = features(&arrays(&time, &dur, &pitch, &vel, &[0, 8], &[0, 0])).unwrap();
        assert_eq!(f[0], 4.0); // duration_s
        assert_eq!(f[1], 8.0); // n_notes
        assert_eq!(f[2], DEFAULT_BPM);
        assert_eq!(f[3], 2.0); // note_density
        assert_eq!(f[4], 2.0); // onset_rate
        assert_eq!(f[5], 0.5); // ioi_median
        assert_eq!(f[6], 0.5); // note_duration
        assert_eq!(f[7], -1.0); // log2(0.5)
        assert_eq!(f[8], 1.0); // legato
        assert_eq!(f[9], 64.0);
        assert_eq!(f[18], 0.0); // one velocity: no range
        assert_eq!(f[10], 60.0);
        assert_eq!(f[15], 0.0); // no triads
    }

    #[test]
    fn major_triads_and_a_major_key() {
        let time = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let dur = [1.0; 6];
        let pitch = [60, 64, 67, 60, 64, 67];
        let vel = [80.0; 6];
        let f = features(&arrays(&time, &dur, &pitch, &vel, &[0, 6], &[0, 0])).unwrap();
        assert_eq!(f[15], 2.0 / 12.0);
        assert!(f[13] > 0.0, "mode {}", f[13]);
        assert_eq!(f[16], f[13]); // one segment: local mode is the mode
        assert_eq!(f[17], f[11]); // and its local major fit is the piece's
    }

    #[test]
    fn pedal_holds_a_released_note() {
        let a = NoteArrays {
            time: &[0.0, 1.0],
            duration: &[0.25, 0.25],
            pitch: &[60, 62],
            velocity: &[64.0, 64.0],
            note_tracks: &[0, 2],
            pedal_time: &[0.0],
            pedal_duration: &[0.75],
            pedal_tracks: &[0, 1],
            tempo_time: &[],
            tempo_qpm: &[],
        };
        let f = features(&a).unwrap();
        assert_eq!(f[7], (0.75f64.log2() + 0.25f64.log2()) / 2.0);
        assert_eq!(f[8], 0.75); // one note has a next onset: 0.75 s over 1 s
    }

    #[test]
    fn tempo_weighted_by_time() {
        assert_eq!(
            time_weighted_bpm(&[0.0, 4.0], &[60.0, 240.0], 0.0, 5.0),
            96.0
        );
        assert_eq!(
            time_weighted_bpm(&[0.0, 4.0], &[60.0, 240.0], 4.5, 4.5),
            240.0
        );
        assert_eq!(time_weighted_bpm(&[], &[], 0.0, 1.0), DEFAULT_BPM);
    }

    #[test]
    fn flat_histogram_fits_no_key() {
        let hist = [0.1; 12];
        let keys = Keys::new();
        assert_eq!(keys.correlations(&hist), (0.0, 0.0));
    }

    #[test]
    fn sum12_matches_numpy_order() {
        let a = [
            1e16, 1.0, -1e16, 1.0, 0.5, 0.25, 0.125, 3.0, 1.0, 1.0, 1.0, 1.0,
        ];
        assert_eq!(
            sum12(&a),
            ((((1e16 + 1.0) + (-1e16 + 1.0)) + ((0.5 + 0.25) + (0.125 + 3.0))) + 1.0 + 1.0 + 1.0)
                + 1.0
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let err = |a: &NoteArrays<'_>| features(a).unwrap_err();
        assert_eq!(
            err(&arrays(&[], &[], &[], &[], &[0], &[0])),
            LabelInputError::NoNotes
        );
        assert!(matches!(
            err(&arrays(&[0.0], &[], &[60], &[1.0], &[0, 1], &[0, 0])),
            LabelInputError::Lengths(_)
        ));
        assert!(matches!(
            err(&arrays(&[0.0], &[1.0], &[60], &[1.0], &[0, 2], &[0, 0])),
            LabelInputError::Offsets(_)
        ));
        assert!(matches!(
            err(&arrays(&[0.0], &[1.0], &[60], &[1.0], &[0, 1], &[0, 0, 0])),
            LabelInputError::Lengths(_)
        ));
    }
}

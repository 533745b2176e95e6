//! Pitch normalisation (docs/contracts.md contract 3), pure Rust on slices.
//!
//! The Python twin is `varemi.core.reference.normalize_pitches`; both must agree on every
//! input, including which parameters are refused.

use std::fmt;

/// How a pitch outside `[low, high]` is brought into the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Move the pitch to the nearest bound.
    Clamp,
    /// Move the pitch by whole octaves until it is inside.
    Fold,
    /// Leave the pitch as it is and mark the note to be removed.
    Drop,
}

/// The policy names, in the order the error message lists them.
pub const POLICY_NAMES: [&str; 3] = ["clamp", "fold", "drop"];

impl Policy {
    /// Parses a policy name (`clamp`, `fold` or `drop`).
    pub fn parse(name: &str) -> Option<Policy> {
        match name {
            "clamp" => Some(Policy::Clamp),
            "fold" => Some(Policy::Fold),
            "drop" => Some(Policy::Drop),
            _ => None,
        }
    }
}

/// A refused pitch range or policy (raised as `varemi._base.errors.PitchRangeError`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PitchError {
    /// The policy is not one of [`POLICY_NAMES`]; holds the name as given.
    UnknownPolicy(String),
    /// `low > high`.
    LowAboveHigh { low: i64, high: i64 },
    /// A bound outside the MIDI range 0..=127.
    OutsideMidi { low: i64, high: i64 },
    /// `fold` on a range narrower than an octave.
    FoldTooNarrow { low: i64, high: i64 },
}

impl fmt::Display for PitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PitchError::UnknownPolicy(name) => write!(
                f,
                "pitch policy must be one of ('clamp', 'fold', 'drop'), got {name}"
            ),
            PitchError::LowAboveHigh { low, high } => {
                write!(f, "pitch range low ({low}) > high ({high})")
            }
            PitchError::OutsideMidi { low, high } => {
                write!(f, "pitch range must lie in 0..127, got [{low}, {high}]")
            }
            PitchError::FoldTooNarrow { low, high } => write!(
                f,
                "pitch policy 'fold' needs a range of at least an octave, got [{low}, {high}]"
            ),
        }
    }
}

impl std::error::Error for PitchError {}

/// A validated pitch range: both bounds in 0..=127 and `low <= high`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PitchRange {
    pub low: u8,
    pub high: u8,
}

/// Validates the parameters in the reference's order: policy, `low > high`, bounds in
/// 0..=127, then the octave `fold` needs.
///
/// `policy` is `None` when the caller passed something that is not a string; `shown`
/// is how the policy is written in the error message (its Python `repr`).
pub fn check_params(
    policy: Option<&str>,
    shown: &str,
    low: i64,
    high: i64,
) -> Result<(Policy, PitchRange), PitchError> {
    let policy = policy
        .and_then(Policy::parse)
        .ok_or_else(|| PitchError::UnknownPolicy(shown.to_owned()))?;
    if low > high {
        return Err(PitchError::LowAboveHigh { low, high });
    }
    let (Ok(low_u8), Ok(high_u8)) = (u8::try_from(low), u8::try_from(high)) else {
        return Err(PitchError::OutsideMidi { low, high });
    };
    if low_u8 > 127 || high_u8 > 127 {
        return Err(PitchError::OutsideMidi { low, high });
    }
    if policy == Policy::Fold && high - low < 11 {
        return Err(PitchError::FoldTooNarrow { low, high });
    }
    Ok((
        policy,
        PitchRange {
            low: low_u8,
            high: high_u8,
        },
    ))
}

/// An integer type pitches may be stored in (int8, uint8, int16, int32, int64).
pub trait Pitch: Copy + Ord + Send + Sync {
    /// The value as an `i64` (lossless for every pitch type).
    fn widen(self) -> i64;
    /// A MIDI pitch (0..=127, which every pitch type holds) as this type.
    fn from_midi(pitch: u8) -> Self;
}

macro_rules! impl_pitch {
    ($($t:ty),*) => {$(
        impl Pitch for $t {
            #[inline]
            fn widen(self) -> i64 {
                i64::from(self)
            }
            #[inline]
            fn from_midi(pitch: u8) -> Self {
                // 0..=127 fits every pitch type, signed or not: the cast is lossless.
                (pitch & 0x7f) as $t
            }
        }
    )*};
}

impl_pitch!(i8, u8, i16, i32, i64);

/// Folds `p` into `[low, high]` by whole octaves (the range spans at least 12).
///
/// Below the range, the result is the value of `[low, low + 11]` in `p`'s pitch class;
/// above it, the value of `[high - 11, high]`. Only remainders are computed, so no
/// `p` (down to `i64::MIN`) can overflow.
#[inline]
fn fold(p: i64, low: i64, high: i64) -> i64 {
    let class = p.rem_euclid(12);
    if p < low {
        low + (class - low.rem_euclid(12)).rem_euclid(12)
    } else if p > high {
        high - (high.rem_euclid(12) - class).rem_euclid(12)
    } else {
        p
    }
}

/// `fold` by table lookup for every pitch in `TABLE_FIRST..TABLE_FIRST + TABLE_LEN`
/// (all that any MIDI data holds), by arithmetic for the rest.
struct FoldTable {
    range: PitchRange,
    folded: [u8; TABLE_LEN],
}

const TABLE_FIRST: i64 = -256;
const TABLE_LEN: usize = 768;

impl FoldTable {
    fn new(range: PitchRange) -> Self {
        let mut folded = [0u8; TABLE_LEN];
        for (p, f) in (TABLE_FIRST..).zip(folded.iter_mut()) {
            *f = Self::compute(p, range);
        }
        FoldTable { range, folded }
    }

    fn compute(p: i64, range: PitchRange) -> u8 {
        let folded = fold(p, i64::from(range.low), i64::from(range.high));
        // The fold lands in [low, high], within 0..=127.
        u8::try_from(folded).unwrap_or(range.low)
    }

    #[inline]
    fn fold(&self, p: i64) -> u8 {
        usize::try_from(p.wrapping_sub(TABLE_FIRST))
            .ok()
            .and_then(|i| self.folded.get(i))
            .copied()
            .unwrap_or_else(|| Self::compute(p, self.range))
    }
}

/// Normalises `pitches` into `range` by `policy`.
///
/// Returns the new pitches (same type and length) and the keep mask (all `true` except
/// for the notes `drop` removes). Never fails: the parameters were validated by
/// [`check_params`], and every result of `clamp` and `fold` lies in 0..=127.
pub fn normalize<T: Pitch>(
    pitches: &[T],
    policy: Policy,
    range: PitchRange,
) -> (Vec<T>, Vec<bool>) {
    let low = T::from_midi(range.low);
    let high = T::from_midi(range.high);
    match policy {
        Policy::Clamp => (
            pitches.iter().map(|&p| p.clamp(low, high)).collect(),
            vec![true; pitches.len()],
        ),
        Policy::Fold => {
            let table = FoldTable::new(range);
            let out = pitches
                .iter()
                .map(|&p| T::from_midi(table.fold(p.widen())))
                .collect();
            (out, vec![true; pitches.len()])
        }
        Policy::Drop => (
            pitches.to_vec(),
            pitches.iter().map(|&p| low <= p && p <= high).collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(low: u8, high: u8) -> PitchRange {
        PitchRange { low, high }
    }

    /// The reference's loops, for comparison.
    fn fold_by_loops(mut p: i64, low: i64, high: i64) -> i64 {
        while p < low {
            p += 12;
        }
        while p > high {
            p -= 12;
        }
        p
    }

    #[test]
    fn parses_policies() {
        assert_eq!(Policy::parse("clamp"), Some(Policy::Clamp));
        assert_eq!(Policy::parse("fold"), Some(Policy::Fold));
        assert_eq!(Policy::parse("drop"), Some(Policy::Drop));
        assert_eq!(Policy::parse("Clamp"), None);
        assert_eq!(Policy::parse(""), None);
        assert_eq!(POLICY_NAMES.map(Policy::parse).iter().flatten().count(), 3);
    }

    #[test]
    fn checks_params_in_reference_order() {
        assert_eq!(
            check_params(Some("clamp"), "'clamp'", 21, 108),
            Ok((Policy::Clamp, range(21, 108)))
        );
        assert_eq!(
            check_params(None, "1", 200, 100),
            Err(PitchError::UnknownPolicy("1".into()))
        );
        assert_eq!(
            check_params(Some("clamp"), "'clamp'", 200, 100),
            Err(PitchError::LowAboveHigh {
                low: 200,
                high: 100
            })
        );
        assert_eq!(
            check_params(Some("drop"), "'drop'", -1, 100),
            Err(PitchError::OutsideMidi { low: -1, high: 100 })
        );
        assert_eq!(
            check_params(Some("drop"), "'drop'", 0, 128),
            Err(PitchError::OutsideMidi { low: 0, high: 128 })
        );
        assert_eq!(
            check_params(Some("drop"), "'drop'", i64::MIN, i64::MAX),
            Err(PitchError::OutsideMidi {
                low: i64::MIN,
                high: i64::MAX
            })
        );
        assert_eq!(
            check_params(Some("fold"), "'fold'", 60, 70),
            Err(PitchError::FoldTooNarrow { low: 60, high: 70 })
        );
        assert_eq!(
            check_params(Some("fold"), "'fold'", 60, 71),
            Ok((Policy::Fold, range(60, 71)))
        );
        assert_eq!(
            check_params(Some("clamp"), "'clamp'", 60, 60),
            Ok((Policy::Clamp, range(60, 60)))
        );
        assert!(PitchError::FoldTooNarrow { low: 1, high: 2 }
            .to_string()
            .contains("octave"));
    }

    #[test]
    fn clamps() {
        let (out, keep) = normalize(
            &[0i16, 20, 21, 60, 108, 109, 127, -5],
            Policy::Clamp,
            range(21, 108),
        );
        assert_eq!(out, vec![21, 21, 21, 60, 108, 108, 108, 21]);
        assert!(keep.iter().all(|&k| k));
    }

    #[test]
    fn folds_like_the_reference_loops() {
        let (out, keep) = normalize(&[0u8, 20, 21, 109, 120, 255], Policy::Fold, range(21, 108));
        assert_eq!(out, vec![24, 32, 21, 97, 108, 99]);
        assert!(keep.iter().all(|&k| k));
        for (low, high) in [(21, 108), (0, 11), (116, 127), (60, 72), (0, 127)] {
            for p in -300..=300 {
                assert_eq!(
                    fold(p, low, high),
                    fold_by_loops(p, low, high),
                    "p={p} low={low} high={high}"
                );
            }
        }
    }

    #[test]
    fn fold_table_equals_arithmetic() {
        for (low, high) in [(21, 108), (0, 11), (116, 127), (0, 127)] {
            let table = FoldTable::new(range(low, high));
            let (lo, hi) = (i64::from(low), i64::from(high));
            for p in (-2000..2000).chain([i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1]) {
                assert_eq!(i64::from(table.fold(p)), fold(p, lo, hi), "p={p}");
            }
        }
    }

    #[test]
    fn folds_extreme_values_without_overflow() {
        let (out, _) = normalize(&[i64::MIN, i64::MAX, 0], Policy::Fold, range(21, 108));
        for (&p, &o) in [i64::MIN, i64::MAX, 0].iter().zip(&out) {
            assert!((21..=108).contains(&o));
            assert_eq!((i128::from(p) - i128::from(o)).rem_euclid(12), 0);
            assert_eq!(fold(p, 21, 108), o);
        }
        let (out, _) = normalize(&[i8::MIN, i8::MAX], Policy::Fold, range(116, 127));
        assert_eq!(out, vec![124, 127]); // -128 + 12 * 21
    }

    #[test]
    fn drops_outside_notes_and_keeps_their_values() {
        let (out, keep) = normalize(&[20i32, 21, 108, 109, -1], Policy::Drop, range(21, 108));
        assert_eq!(out, vec![20, 21, 108, 109, -1]);
        assert_eq!(keep, vec![false, true, true, false, false]);
    }

    #[test]
    fn handles_empty_input() {
        for policy in [Policy::Clamp, Policy::Fold, Policy::Drop] {
            let (out, keep) = normalize::<i8>(&[], policy, range(21, 108));
            assert!(out.is_empty() && keep.is_empty());
        }
    }
}

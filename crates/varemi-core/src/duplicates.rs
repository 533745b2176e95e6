//! Duplicate detection: a file's fingerprint (exact and transposition-invariant hashes
//! of its sorted notes, MinHash signature of its pitch-interval n-grams). The pure-Python
//! twins are `varemi.music.fingerprint._fingerprint_notes_py` and `_pitch_minhash_py`.

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

fn splitmix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One mixed hash per n-gram of `seq`, tagged by kind, appended to `out`.
fn ngram_hashes(seq: &[i64], n: usize, tag: u64, out: &mut Vec<u64>) {
    if n == 0 || seq.len() < n {
        return;
    }
    for gram in seq.windows(n) {
        let mut h = tag.wrapping_mul(MIX);
        for &g in gram {
            h = (h ^ g as u64).wrapping_mul(MIX);
        }
        out.push(splitmix(h));
    }
}

/// The MinHash signature of the set of interval n-grams (tag 1) of `pitches` (notes
/// in onset, then pitch, order; so transposition-invariant): for permutation k,
/// the minimum over shingles x of the high 32 bits of `a[k] * x + b[k]` (mod 2^64);
/// `u32::MAX` everywhere for no shingle. `a` and `b` have the signature's length
/// (the shorter of the two is used).
pub fn pitch_minhash(pitches: &[i64], n: usize, a: &[u64], b: &[u64]) -> Vec<u32> {
    let intervals: Vec<i64> = pitches
        .windows(2)
        .map(|w| w[1].wrapping_sub(w[0]))
        .collect();
    let mut shingles = Vec::with_capacity(pitches.len());
    ngram_hashes(&intervals, n, 1, &mut shingles);
    shingles.sort_unstable();
    shingles.dedup();
    let k = a.len().min(b.len());
    let mut sig = vec![u32::MAX; k];
    for (s, (&ak, &bk)) in sig.iter_mut().zip(a.iter().zip(b)) {
        let mut m = u32::MAX;
        for &x in &shingles {
            let v = (ak.wrapping_mul(x).wrapping_add(bk) >> 32) as u32;
            m = m.min(v);
        }
        *s = m;
    }
    sig
}

/// What [`fingerprint_notes`] returns: see `varemi.music.fingerprint.Fingerprint`.
pub struct NoteFingerprint {
    /// BLAKE2b-64 of the sorted (onset, pitch, duration) triples, as little-endian i64s.
    pub exact: [u8; 8],
    /// The same with onsets from the first and pitches from the lowest.
    pub transposed: [u8; 8],
    /// [`pitch_minhash`] of the sorted notes' pitches.
    pub minhash: Vec<u32>,
}

fn digest(rows: &[[i64; 3]]) -> [u8; 8] {
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let hash = blake2b_simd::Params::new().hash_length(8).hash(&bytes);
    let mut out = [0u8; 8];
    out.copy_from_slice(hash.as_bytes());
    out
}

/// The MinHash settings of [`pitch_minhash`]: n-gram length and the permutations.
pub struct MinHashParams<'a> {
    pub n: usize,
    pub a: &'a [u64],
    pub b: &'a [u64],
}

/// A file's fingerprint from its notes (ticks, `tpq` ticks per quarter): onsets and
/// durations rounded half to even to `resolution` steps per quarter, notes sorted by
/// (onset, pitch, duration). The slices have one value per note (the shortest wins).
pub fn fingerprint_notes(
    time: &[i64],
    pitch: &[i64],
    duration: &[i64],
    (tpq, resolution): (i64, i64),
    minhash: &MinHashParams,
) -> NoteFingerprint {
    let (res, tpq) = (resolution as f64, tpq.max(1) as f64);
    let step = |t: i64| (t as f64 * res / tpq).round_ties_even() as i64;
    let mut rows: Vec<[i64; 3]> = time
        .iter()
        .zip(pitch)
        .zip(duration)
        .map(|((&t, &p), &d)| [step(t), p, step(d)])
        .collect();
    rows.sort_unstable();
    let exact = digest(&rows);
    let first = rows.first().map_or(0, |r| r[0]);
    let low = rows.iter().map(|r| r[1]).min().unwrap_or(0);
    let pitches: Vec<i64> = rows.iter().map(|r| r[1]).collect();
    for r in rows.iter_mut() {
        r[0] -= first;
        r[1] -= low;
    }
    NoteFingerprint {
        exact,
        transposed: digest(&rows),
        minhash: pitch_minhash(&pitches, minhash.n, minhash.a, minhash.b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_short_sequences_have_the_empty_signature() {
        assert_eq!(pitch_minhash(&[], 4, &[1, 3], &[0, 5]), vec![u32::MAX; 2]);
        assert_eq!(
            pitch_minhash(&[60, 62, 64, 65], 4, &[1], &[0]),
            vec![u32::MAX]
        );
    }

    #[test]
    fn identical_sets_give_identical_signatures() {
        let a = [3u64, 0x1234_5678_9ABC_DEF1, 77];
        let b = [0u64, 99, 1 << 40];
        let p = [60i64, 62, 64, 65, 67, 69, 71, 72, 60, 62, 64, 65];
        // the melody repeats its first four notes: the repeated grams are one shingle
        let once = [60i64, 62, 64, 65, 67, 69, 71, 72, 60, 62, 64];
        assert_eq!(
            pitch_minhash(&p, 4, &a, &b),
            pitch_minhash(&once, 4, &a, &b)
        );
        let transposed: Vec<i64> = p.iter().map(|x| x + 5).collect();
        assert_eq!(
            pitch_minhash(&p, 4, &a, &b),
            pitch_minhash(&transposed, 4, &a, &b)
        );
        let reversed: Vec<i64> = p.iter().rev().copied().collect(); // other intervals
        assert_ne!(
            pitch_minhash(&p, 4, &a, &b),
            pitch_minhash(&reversed, 4, &a, &b)
        );
    }

    #[test]
    fn one_gram_by_hand() {
        // n = 2 on three pitches: one interval gram (+1, -3), tag 1
        let p = [60i64, 61, 58];
        let mut h = MIX;
        for g in [1i64, -3] {
            h = (h ^ g as u64).wrapping_mul(MIX);
        }
        let x = splitmix(h);
        let want = (5u64.wrapping_mul(x).wrapping_add(9) >> 32) as u32;
        assert_eq!(pitch_minhash(&p, 2, &[5], &[9]), vec![want]);
    }

    #[test]
    fn fingerprints_ignore_note_order_and_see_transposition() {
        let (a, b) = ([3u64, 77], [0u64, 99]);
        let params = MinHashParams { n: 4, a: &a, b: &b };
        let fp = |t: &[i64], p: &[i64], d: &[i64]| fingerprint_notes(t, p, d, (480, 48), &params);
        let one = fp(&[0, 480, 960, 1440, 1920], &[60, 62, 64, 65, 67], &[480; 5]);
        let shuffled = fp(&[960, 0, 1920, 480, 1440], &[64, 60, 67, 62, 65], &[480; 5]);
        assert_eq!(one.exact, shuffled.exact);
        assert_eq!(one.minhash, shuffled.minhash);
        let up = fp(&[0, 480, 960, 1440, 1920], &[65, 67, 69, 70, 72], &[480; 5]);
        assert_ne!(one.exact, up.exact);
        assert_eq!(one.transposed, up.transposed);
        assert_eq!(one.minhash, up.minhash);
        let empty = fp(&[], &[], &[]);
        assert_eq!(empty.exact, digest(&[]));
        assert_eq!(empty.minhash, vec![u32::MAX; 2]);
    }
}

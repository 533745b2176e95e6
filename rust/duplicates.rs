//! MinHash signatures of a note sequence's pitch-interval n-grams (duplicate
//! detection). The pure-Python twin is `varemi.duplicates._pitch_minhash_py`.

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
}

//! Split hashing (docs/contracts.md contract 6), pure Rust.
//!
//! The Python twins are `varemi.core.reference.split_hashes` and `varemi.core.reference.val_mask`.

use std::fmt;

/// 2**64 as a float64 (exactly representable).
const TWO_64: f64 = 18_446_744_073_709_551_616.0;

/// A refused `train_split` (raised as `varemi._base.errors.SplitParameterError`).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSplitError(pub f64);

impl fmt::Display for TrainSplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "train_split must be in (0, 1], got {}", self.0)
    }
}

/// The keyed BLAKE2b hasher of a seed: 8-byte digest, the seed little-endian as key.
pub fn hasher(seed: u64) -> blake2b_simd::Params {
    let mut params = blake2b_simd::Params::new();
    params.hash_length(8).key(&seed.to_le_bytes());
    params
}

/// The split hash of one key: its keyed 8-byte BLAKE2b digest read little-endian.
#[inline]
pub fn hash_key(hasher: &blake2b_simd::Params, key: &[u8]) -> u64 {
    digest_to_u64(&hasher.hash(key))
}

/// The split hashes of `keys` (UTF-8 strings) under `seed`.
///
/// Keys are hashed several at a time (`blake2b_simd::many`, SIMD lanes where the CPU
/// has them); each result equals [`hash_key`] of that key alone.
pub fn split_hashes<S: AsRef<str>>(keys: &[S], seed: u64) -> Vec<u64> {
    let hasher = hasher(seed);
    let mut out = Vec::with_capacity(keys.len());
    let mut jobs = Vec::with_capacity(CHUNK.min(keys.len()));
    for chunk in keys.chunks(CHUNK) {
        jobs.clear();
        jobs.extend(
            chunk
                .iter()
                .map(|k| blake2b_simd::many::HashManyJob::new(&hasher, k.as_ref().as_bytes())),
        );
        blake2b_simd::many::hash_many(jobs.iter_mut());
        out.extend(jobs.iter().map(|job| digest_to_u64(&job.to_hash())));
    }
    out
}

/// Keys hashed per `hash_many` call.
const CHUNK: usize = 256;

fn digest_to_u64(hash: &blake2b_simd::Hash) -> u64 {
    let mut digest = [0u8; 8];
    for (d, &b) in digest.iter_mut().zip(hash.as_bytes()) {
        *d = b;
    }
    u64::from_le_bytes(digest)
}

/// Checks `0 < train_split <= 1` (refusing NaN).
pub fn check_train_split(train_split: f64) -> Result<(), TrainSplitError> {
    if train_split > 0.0 && train_split <= 1.0 {
        Ok(())
    } else {
        Err(TrainSplitError(train_split))
    }
}

/// `floor((1 - train_split) * 2**64)` in float64, as Python computes it.
///
/// The result can be 2**64 itself (when `1 - train_split` rounds to 1.0), hence `u128`.
pub fn val_threshold(train_split: f64) -> u128 {
    let threshold = ((1.0 - train_split) * TWO_64).floor();
    // A whole number in [0, 2**64] for train_split in (0, 1]: the cast is exact.
    threshold as u128
}

/// True for each key whose file belongs to `val`: `hash < threshold`.
pub fn val_mask<S: AsRef<str>>(
    keys: &[S],
    seed: u64,
    train_split: f64,
) -> Result<Vec<bool>, TrainSplitError> {
    check_train_split(train_split)?;
    let threshold = val_threshold(train_split);
    Ok(split_hashes(keys, seed)
        .into_iter()
        .map(|h| u128::from(h) < threshold)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_hashlib() {
        // int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8,
        //                key=seed.to_bytes(8, "little")).digest(), "little")
        assert_eq!(split_hashes(&["a/b.mid"], 42), vec![0xbba2_3c6a_fc8a_2838]);
        assert_eq!(split_hashes(&[""], 0), vec![0x3c1b_4fbf_d8ff_afc3]);
        assert_eq!(
            split_hashes(&["é/ü.mid"], u64::MAX),
            vec![0xccbc_def4_84f7_c037]
        );
    }

    #[test]
    fn batched_hashes_equal_single_hashes() {
        // Lengths around the block size and counts around the chunk size.
        let keys: Vec<String> = (0..CHUNK * 2 + 3).map(|i| "k".repeat(i % 300)).collect();
        let hasher = hasher(9);
        let single: Vec<u64> = keys
            .iter()
            .map(|k| hash_key(&hasher, k.as_bytes()))
            .collect();
        assert_eq!(split_hashes(&keys, 9), single);
    }

    #[test]
    fn seed_changes_hashes() {
        let keys = ["x.mid", "y.mid"];
        assert_ne!(split_hashes(&keys, 1), split_hashes(&keys, 2));
        assert_eq!(split_hashes(&keys, 1), split_hashes(&keys, 1));
        assert!(split_hashes::<&str>(&[], 1).is_empty());
    }

    #[test]
    fn threshold_is_computed_in_float64() {
        assert_eq!(val_threshold(1.0), 0);
        assert_eq!(val_threshold(0.5), 1u128 << 63);
        // 1 - 1e-300 rounds to 1.0, so the threshold is 2**64: every file is in val.
        assert_eq!(val_threshold(1e-300), 1u128 << 64);
        // Python: math.floor((1 - 0.9) * 2**64) == 1844674407370954752
        assert_eq!(val_threshold(0.9), 1_844_674_407_370_954_752);
        assert_eq!(val_mask(&["a", "b", "c"], 7, 1e-300), Ok(vec![true; 3]));
        assert_eq!(val_mask(&["a", "b", "c"], 7, 1.0), Ok(vec![false; 3]));
    }

    #[test]
    fn refuses_bad_train_splits() {
        for bad in [
            0.0,
            -0.5,
            1.000_000_1,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            assert!(check_train_split(bad).is_err(), "{bad}");
            assert!(val_mask(&["a"], 1, bad).is_err(), "{bad}");
        }
        assert!(TrainSplitError(0.0).to_string().contains("(0, 1]"));
    }

    #[test]
    fn val_mask_agrees_with_hashes() {
        let keys: Vec<String> = (0..1000).map(|i| format!("dir/{i}.mid")).collect();
        let hashes = split_hashes(&keys, 42);
        let mask = val_mask(&keys, 42, 0.9).expect("mask");
        let threshold = val_threshold(0.9);
        for (h, m) in hashes.iter().zip(&mask) {
            assert_eq!(u128::from(*h) < threshold, *m);
        }
        let in_val = mask.iter().filter(|&&m| m).count();
        assert!((50..150).contains(&in_val), "{in_val}");
    }
}

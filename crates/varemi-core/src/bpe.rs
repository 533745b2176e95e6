//! MidiTok's BPE step (`encode_token_ids`) on base token ids, returning the model's ids.
//!
//! MidiTok 3.1 turns every base id into one character (`chr(id + 33)`), cuts the
//! sequence into chunks (per bar, per beat, or not at all) and hands the chunks to a
//! Hugging Face `tokenizers.Tokenizer` as one pre-tokenized input. For each chunk that
//! tokenizer:
//!
//! 1. splits out its *added tokens* (MidiTok's special tokens and any token added with
//!    `add_to_vocab`): each occurrence becomes that token's id, and the text between
//!    them forms *pieces* (empty pieces vanish);
//! 2. with a `Metaspace` pre-tokenizer (`prepend_scheme="always"`), prefixes every
//!    piece with the replacement character `▁`;
//! 3. runs its BPE model on each piece: each character becomes its vocabulary id (a
//!    character outside the vocabulary is dropped: MidiTok's models have no
//!    `unk_token`), then merges are applied lowest rank first, leftmost first among
//!    equal ranks, exactly as `tokenizers`' `Word::merge_all` does.
//!
//! [`Bpe`] does the same on ids: the Python side (`varemi.music.encoder.bpe`) resolves every base id
//! to what its character becomes (a vocabulary id, an added token, or nothing) and
//! computes the chunk boundaries; this module does steps 1 to 3, caching the result of
//! each distinct chunk (bars repeat a lot within and across pieces).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// A small, fast, non-cryptographic hasher for integer keys (the `FxHash` mixing step
/// of rustc): the merge table and the chunk cache hash a few integers per lookup.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// What the character of one base id becomes in the Hugging Face pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseSymbol {
    /// Not a base id of the tokenizer (MidiTok raises `KeyError` on it).
    Unknown,
    /// A character the BPE model does not know: dropped from its piece.
    Dropped,
    /// A character of the BPE vocabulary, with its id: part of a piece.
    Model(u32),
    /// An added token (special or added with `add_to_vocab`): splits the chunk and
    /// becomes this id.
    Added(u32),
}

/// Bad input to [`Bpe::encode_chunks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BpeError {
    /// A base id that is not in the tokenizer's base vocabulary.
    UnknownId { index: usize, id: i64 },
    /// Chunk offsets that do not start at 0, end at the sequence length and never
    /// decrease.
    Offsets(String),
}

impl fmt::Display for BpeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BpeError::UnknownId { index, id } => write!(
                f,
                "base id {id} at index {index} is not in the tokenizer's base vocabulary"
            ),
            BpeError::Offsets(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for BpeError {}

/// A BPE model over ids: the base-id table, the optional piece prefix and the merges.
#[derive(Debug, Clone)]
pub struct Bpe {
    table: Vec<BaseSymbol>,
    prefix: Option<u32>,
    /// `(left, right) -> (rank, new_id)`, as `tokenizers`' `MergeMap`.
    merges: FxHashMap<(u32, u32), (u32, u32)>,
}

/// Results per distinct chunk of base ids.
pub type ChunkCache = FxHashMap<Box<[i32]>, Box<[u32]>>;

/// Entries a [`ChunkCache`] may hold before [`Bpe::encode_chunks`] empties it. An entry
/// (a bar of base ids and its merged ids) takes a few hundred bytes: 2^18 entries bound
/// a worker's cache to about 150 MB (2^20 let a worker reach 700 MB on a 150,000-file
/// build) while still holding far more bars than one piece has.
pub const CACHE_CAPACITY: usize = 1 << 18;

/// Buffers reused from piece to piece.
#[derive(Debug, Default)]
struct Scratch {
    piece: Vec<u32>,
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Reverse<(u32, usize, u32)>>,
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    c: u32,
    prev: isize,
    next: isize,
    removed: bool,
}

impl Bpe {
    /// A model from its base-id table, piece prefix and merges.
    ///
    /// * `table[i]` says what base id `i` becomes.
    /// * `prefix`: the vocabulary id of the `Metaspace` replacement character put in
    ///   front of every piece, or `None` (no `Metaspace` pre-tokenizer, or a replacement
    ///   outside the vocabulary, which the model would drop).
    /// * `merges`: `(left, right, new_id)` in rank order (rank = index). A pair listed
    ///   twice keeps its last rank and id, as `tokenizers` builds its `MergeMap`.
    pub fn new(table: Vec<BaseSymbol>, prefix: Option<u32>, merges: &[(u32, u32, u32)]) -> Self {
        let mut map = FxHashMap::with_capacity_and_hasher(merges.len(), Default::default());
        for (rank, &(left, right, new_id)) in merges.iter().enumerate() {
            let rank = u32::try_from(rank).unwrap_or(u32::MAX);
            map.insert((left, right), (rank, new_id));
        }
        Bpe {
            table,
            prefix,
            merges: map,
        }
    }

    /// The number of base ids the table covers.
    pub fn base_len(&self) -> usize {
        self.table.len()
    }

    fn symbol(&self, index: usize, id: i32) -> Result<BaseSymbol, BpeError> {
        let unknown = BpeError::UnknownId {
            index,
            id: i64::from(id),
        };
        let symbol = usize::try_from(id)
            .ok()
            .and_then(|i| self.table.get(i).copied())
            .ok_or_else(|| unknown.clone())?;
        match symbol {
            BaseSymbol::Unknown => Err(unknown),
            s => Ok(s),
        }
    }

    /// Checks every id of `base` against the table.
    pub fn check_ids(&self, base: &[i32]) -> Result<(), BpeError> {
        for (index, &id) in base.iter().enumerate() {
            self.symbol(index, id)?;
        }
        Ok(())
    }

    /// Encodes one chunk (one "word" of the pre-tokenized input), appending to `out`.
    ///
    /// Every id must have been checked by [`Bpe::check_ids`].
    pub fn encode_chunk(&self, chunk: &[i32], out: &mut Vec<u32>) {
        self.encode_chunk_with(chunk, out, &mut Scratch::default());
    }

    fn encode_chunk_with(&self, chunk: &[i32], out: &mut Vec<u32>, scratch: &mut Scratch) {
        let mut piece = std::mem::take(&mut scratch.piece);
        let mut in_piece = false;
        for &id in chunk {
            let symbol = usize::try_from(id)
                .ok()
                .and_then(|i| self.table.get(i).copied())
                .unwrap_or(BaseSymbol::Unknown);
            match symbol {
                BaseSymbol::Added(added) => {
                    if in_piece {
                        self.merge_piece(&piece, out, scratch);
                        in_piece = false;
                    }
                    out.push(added);
                }
                BaseSymbol::Model(c) => {
                    if !in_piece {
                        self.start_piece(&mut piece);
                        in_piece = true;
                    }
                    piece.push(c);
                }
                BaseSymbol::Dropped | BaseSymbol::Unknown => {
                    // The character still makes the piece non-empty (so it gets its
                    // prefix); the model then drops it.
                    if !in_piece {
                        self.start_piece(&mut piece);
                        in_piece = true;
                    }
                }
            }
        }
        if in_piece {
            self.merge_piece(&piece, out, scratch);
        }
        scratch.piece = piece;
    }

    fn start_piece(&self, piece: &mut Vec<u32>) {
        piece.clear();
        if let Some(prefix) = self.prefix {
            piece.push(prefix);
        }
    }

    /// `tokenizers`' `Word::merge_all` (without dropout) on `piece`, appended to `out`.
    fn merge_piece(&self, piece: &[u32], out: &mut Vec<u32>, scratch: &mut Scratch) {
        if piece.len() < 2 {
            out.extend_from_slice(piece);
            return;
        }
        let n = piece.len();
        let symbols = &mut scratch.symbols;
        symbols.clear();
        symbols.extend(piece.iter().enumerate().map(|(i, &c)| Symbol {
            c,
            prev: i as isize - 1,
            next: if i + 1 < n { i as isize + 1 } else { -1 },
            removed: false,
        }));
        // Min-heap on (rank, pos): lowest rank first, leftmost first among equal ranks.
        // Entries with equal (rank, pos) are the same merge, so their order is moot.
        let queue = &mut scratch.queue;
        queue.clear();
        queue.extend(symbols.windows(2).enumerate().filter_map(|(pos, w)| {
            self.merges
                .get(&(w[0].c, w[1].c))
                .map(|&(rank, new_id)| Reverse((rank, pos, new_id)))
        }));
        while let Some(Reverse((_, pos, new_id))) = queue.pop() {
            if symbols[pos].removed || symbols[pos].next == -1 {
                continue;
            }
            let next_pos = symbols[pos].next as usize;
            let right = symbols[next_pos];
            // Skip an expired entry: the pair at `pos` changed since it was queued.
            match self.merges.get(&(symbols[pos].c, right.c)) {
                Some(&(_, id)) if id == new_id => {}
                _ => continue,
            }
            symbols[pos].c = new_id;
            symbols[pos].next = right.next;
            symbols[next_pos].removed = true;
            if right.next > -1 && (right.next as usize) < symbols.len() {
                symbols[right.next as usize].prev = pos as isize;
            }
            let current = symbols[pos];
            if current.prev >= 0 {
                let prev = current.prev as usize;
                if let Some(&(rank, id)) = self.merges.get(&(symbols[prev].c, current.c)) {
                    queue.push(Reverse((rank, prev, id)));
                }
            }
            if current.next >= 0 {
                let next = current.next as usize;
                if let Some(&(rank, id)) = self.merges.get(&(current.c, symbols[next].c)) {
                    queue.push(Reverse((rank, pos, id)));
                }
            }
        }
        out.extend(symbols.iter().filter(|s| !s.removed).map(|s| s.c));
    }

    /// Encodes a sequence of base ids cut into chunks at `offsets`.
    ///
    /// Chunk `k` is `base[offsets[k]..offsets[k + 1]]`; `offsets` must start at 0, end
    /// at `base.len()` and never decrease (empty chunks give nothing, as empty words do
    /// in `tokenizers`). Results are looked up in, and added to, `cache`, which is
    /// emptied first when it holds [`CACHE_CAPACITY`] entries or more.
    pub fn encode_chunks(
        &self,
        base: &[i32],
        offsets: &[i64],
        cache: &mut ChunkCache,
    ) -> Result<Vec<u32>, BpeError> {
        check_offsets(base.len(), offsets)?;
        self.check_ids(base)?;
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        let mut out = Vec::with_capacity(base.len());
        let mut scratch = Scratch::default();
        for bounds in offsets.windows(2) {
            let chunk = &base[bounds[0] as usize..bounds[1] as usize];
            if chunk.is_empty() {
                continue;
            }
            if let Some(hit) = cache.get(chunk) {
                out.extend_from_slice(hit);
                continue;
            }
            let start = out.len();
            self.encode_chunk_with(chunk, &mut out, &mut scratch);
            cache.insert(chunk.into(), out[start..].into());
        }
        Ok(out)
    }
}

/// Checks chunk offsets: at least one entry, first 0, last `len`, non-decreasing.
pub fn check_offsets(len: usize, offsets: &[i64]) -> Result<(), BpeError> {
    let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
        return Err(BpeError::Offsets(
            "split offsets must hold at least one entry (0)".into(),
        ));
    };
    if first != 0 {
        return Err(BpeError::Offsets(format!(
            "split offsets must start at 0, got {first}"
        )));
    }
    if usize::try_from(last).ok() != Some(len) {
        return Err(BpeError::Offsets(format!(
            "split offsets must end at the sequence length {len}, got {last}"
        )));
    }
    if let Some(k) = offsets.windows(2).position(|w| w[1] < w[0]) {
        return Err(BpeError::Offsets(format!(
            "split offsets must not decrease: offsets[{}] = {} > offsets[{}] = {}",
            k,
            offsets[k],
            k + 1,
            offsets[k + 1]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Base ids 0..=4 are "a".."e" (model ids 10..=14), 5 is a special token (id 0),
    /// 6 is a character outside the model's vocabulary, 7 is not a base id.
    fn table() -> Vec<BaseSymbol> {
        let mut t: Vec<BaseSymbol> = (0..5).map(|i| BaseSymbol::Model(10 + i)).collect();
        t.push(BaseSymbol::Added(0));
        t.push(BaseSymbol::Dropped);
        t.push(BaseSymbol::Unknown);
        t
    }

    const A: u32 = 10;
    const B: u32 = 11;
    const C: u32 = 12;
    const P: u32 = 99; // the prefix "▁"

    fn encode(bpe: &Bpe, base: &[i32]) -> Vec<u32> {
        let offsets = [0, base.len() as i64];
        bpe.encode_chunks(base, &offsets, &mut ChunkCache::default())
            .unwrap()
    }

    #[test]
    fn lowest_rank_first() {
        // merges: b c -> 20 (rank 0), a b -> 21 (rank 1), a 20 -> 22 (rank 2)
        let bpe = Bpe::new(table(), None, &[(B, C, 20), (A, B, 21), (A, 20, 22)]);
        assert_eq!(encode(&bpe, &[0, 1, 2]), vec![22]);
        assert_eq!(encode(&bpe, &[0, 1]), vec![21]);
        assert_eq!(encode(&bpe, &[0, 1, 0, 1, 2]), vec![21, 22]);
    }

    #[test]
    fn leftmost_first_on_equal_rank() {
        // a a -> 20: "aaa" merges the left pair first.
        let bpe = Bpe::new(table(), None, &[(A, A, 20), (20, A, 21)]);
        assert_eq!(encode(&bpe, &[0, 0, 0]), vec![21]);
        let bpe = Bpe::new(table(), None, &[(A, A, 20), (A, 20, 21)]);
        assert_eq!(encode(&bpe, &[0, 0, 0]), vec![20, A]);
        assert_eq!(encode(&bpe, &[0, 0, 0, 0]), vec![20, 20]);
    }

    #[test]
    fn prefix_starts_every_piece_and_specials_split() {
        let bpe = Bpe::new(table(), Some(P), &[(P, A, 30), (A, B, 31)]);
        assert_eq!(encode(&bpe, &[0, 1]), vec![30, B]);
        assert_eq!(encode(&bpe, &[1, 0, 1]), vec![P, B, 31]);
        // the special token splits the chunk: each piece gets its own prefix
        assert_eq!(encode(&bpe, &[0, 5, 0, 1]), vec![30, 0, 30, B]);
        assert_eq!(encode(&bpe, &[5, 5]), vec![0, 0]);
        assert_eq!(encode(&bpe, &[]), Vec::<u32>::new());
    }

    #[test]
    fn dropped_characters_vanish_but_keep_their_piece() {
        let bpe = Bpe::new(table(), Some(P), &[(A, B, 31)]);
        // the dropped character no longer separates a and b
        assert_eq!(encode(&bpe, &[0, 6, 1]), vec![P, 31]);
        // a piece of dropped characters only still gets its prefix
        assert_eq!(encode(&bpe, &[5, 6, 5]), vec![0, P, 0]);
        let bpe = Bpe::new(table(), None, &[]);
        assert_eq!(encode(&bpe, &[6, 6]), Vec::<u32>::new());
    }

    #[test]
    fn duplicate_merge_keeps_the_last() {
        let bpe = Bpe::new(table(), None, &[(A, B, 20), (B, C, 21), (A, B, 22)]);
        assert_eq!(encode(&bpe, &[0, 1, 2]), vec![A, 21]);
    }

    #[test]
    fn chunks_are_encoded_separately_and_cached() {
        let bpe = Bpe::new(table(), None, &[(A, B, 20)]);
        let base = [0, 1, 0, 0, 1];
        let mut cache = ChunkCache::default();
        let whole = bpe.encode_chunks(&base, &[0, 5], &mut cache).unwrap();
        assert_eq!(whole, vec![20, A, 20]);
        let split = bpe
            .encode_chunks(&base, &[0, 1, 1, 3, 5], &mut cache)
            .unwrap();
        assert_eq!(split, vec![A, B, A, 20]);
        assert_eq!(cache.len(), 4);
        let again = bpe
            .encode_chunks(&base, &[0, 1, 1, 3, 5], &mut cache)
            .unwrap();
        assert_eq!(again, split);
    }

    #[test]
    fn the_chunk_cache_never_holds_more_than_its_capacity() {
        let bpe = Bpe::new(table(), None, &[(A, B, 20)]);
        let mut cache = ChunkCache::default();
        let (mut base, mut offsets) = (Vec::new(), vec![0i64]);
        for n in 1..=CACHE_CAPACITY + 1000 {
            // chunk n: the base-3 digits of n (distinct chunks for distinct n)
            let mut m = n;
            while m > 0 {
                base.push((m % 3) as i32);
                m /= 3;
            }
            offsets.push(base.len() as i64);
            if offsets.len() > 4096 || n == CACHE_CAPACITY + 1000 {
                bpe.encode_chunks(&base, &offsets, &mut cache).unwrap();
                assert!(cache.len() <= CACHE_CAPACITY);
                base.clear();
                offsets = vec![0];
            }
        }
        assert!(!cache.is_empty());
    }

    /// Textbook BPE: merge the lowest-rank adjacent pair, leftmost first, until none.
    /// Equal to `merge_all` when no two merges produce the same id.
    fn naive(piece: &[u32], merges: &[(u32, u32, u32)]) -> Vec<u32> {
        let mut word = piece.to_vec();
        loop {
            let best = (0..word.len().saturating_sub(1))
                .filter_map(|i| {
                    merges
                        .iter()
                        .rposition(|&(a, b, _)| (a, b) == (word[i], word[i + 1]))
                        .map(|rank| (rank, i))
                })
                .min();
            let Some((rank, i)) = best else {
                return word;
            };
            word[i] = merges[rank].2;
            word.remove(i + 1);
        }
    }

    #[test]
    fn random_pieces_equal_textbook_bpe() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n) as u32
        };
        for _ in 0..200 {
            // 4 base symbols (ids 10..=13); every merge makes a new id (100, 101, ...)
            // out of two existing ones.
            let mut ids: Vec<u32> = (10..14).collect();
            let mut merges = Vec::new();
            for k in 0..next(12) {
                let a = ids[next(ids.len() as u64) as usize];
                let b = ids[next(ids.len() as u64) as usize];
                if merges.iter().any(|&(x, y, _)| (x, y) == (a, b)) {
                    continue;
                }
                merges.push((a, b, 100 + k));
                ids.push(100 + k);
            }
            let table: Vec<BaseSymbol> = (10..14).map(BaseSymbol::Model).collect();
            let bpe = Bpe::new(table, None, &merges);
            for _ in 0..20 {
                let base: Vec<i32> = (0..next(16)).map(|_| next(4) as i32).collect();
                let piece: Vec<u32> = base.iter().map(|&i| 10 + i as u32).collect();
                assert_eq!(
                    encode(&bpe, &base),
                    naive(&piece, &merges),
                    "{merges:?} {base:?}"
                );
            }
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let bpe = Bpe::new(table(), None, &[]);
        let mut cache = ChunkCache::default();
        for bad in [7, 8, -1, i32::MAX, i32::MIN] {
            let err = bpe.encode_chunks(&[0, bad], &[0, 2], &mut cache);
            assert_eq!(
                err,
                Err(BpeError::UnknownId {
                    index: 1,
                    id: i64::from(bad)
                })
            );
        }
        for offsets in [
            &[][..],
            &[1, 2],
            &[0, 1],
            &[0, 3],
            &[0, 2, 1, 2],
            &[0, -1, 2],
        ] {
            assert!(matches!(
                bpe.encode_chunks(&[0, 1], offsets, &mut cache),
                Err(BpeError::Offsets(_))
            ));
        }
        assert_eq!(bpe.encode_chunks(&[], &[0], &mut cache), Ok(vec![]));
        assert_eq!(bpe.encode_chunks(&[], &[0, 0], &mut cache), Ok(vec![]));
    }
}

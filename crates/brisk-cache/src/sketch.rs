//! TinyLFU's frequency estimate: a count-min sketch of 4-bit counters that ages (Einziger,
//! Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission Policy", 2017).
//!
//! There is no doorkeeper in front of it. The paper's doorkeeper (a bloom filter that takes a
//! key's first sighting) saves sketch memory; with counters sized to the capacity it only
//! removes information, and measured here it cost 1–2 points of hit ratio on every trace
//! (Zipf 0.8: .286 with it, .307 without). Caffeine dropped it for the same reason.
//!
//! Counters are updated with atomics so that a hit records its access under a shard's read
//! lock; aging halves every counter under the shard's write lock.

use std::{
    cell::Cell,
    sync::atomic::{AtomicU64, Ordering},
};

/// Four counters per key, one in each of four rows.
const ROWS: u64 = 4;
/// A 4-bit counter saturates here.
const MAX_COUNT: u64 = 15;
/// Every nibble's low three bits: halving a word keeps each counter inside its nibble.
const HALF_MASK: u64 = 0x7777_7777_7777_7777;

pub(crate) struct Sketch {
    /// 16 four-bit counters per word, in blocks of 8 words (one cache line): a key's four
    /// counters all sit in one block, so counting an access touches one line.
    table: Box<[AtomicU64]>,
    /// Informative accesses since the last aging, one in [`SAMPLE_EVERY`] counted.
    samples: AtomicU64,
    /// Age after about this many (counted) accesses: [`AGE_AFTER_PER_ENTRY`] per entry the
    /// shard holds (or may hold, for a sketch sized once).
    sample_limit: u64,
    /// The most entries [`fit`](Self::fit) sizes the sketch for: the table never grows past
    /// a word per entry of this.
    most: u64,
}

/// Informative accesses per entry between two agings. The paper advises ten; measured here
/// (brisk counts a hit only when it sets the entry's reference bit, so a resident entry's
/// count grows once per pass of the eviction hand), thirty tells popular keys from unpopular
/// ones better where most keys are rarely seen: Zipf 0.8 at capacity 10k over 1M keys .305
/// with ten, .323 with thirty; Zipf 1.0 .642 and .653; the scan trace .526 and .537; OLTP
/// at 1k .380 and .392, at 10k .605 and .610. Sixty loses on OLTP (.376 and .600).
const AGE_AFTER_PER_ENTRY: u64 = 30;

/// One informative access in this many (per thread) counts towards aging.
pub(crate) const SAMPLE_EVERY: u64 = 8;
/// A per-thread sampler: `tick(&COUNTER)` is true for one call in [`SAMPLE_EVERY`] of the
/// calling thread's on that counter. Each use has its own counter, so that two samplers
/// called in a fixed pattern cannot lock each other out.
pub(crate) fn tick(counter: &'static std::thread::LocalKey<Cell<u64>>) -> bool {
    counter.with(|ticks| {
        let tick = ticks.get().wrapping_add(1);
        ticks.set(tick);
        tick.is_multiple_of(SAMPLE_EVERY)
    })
}

thread_local! {
    /// The sketch's aging sampler.
    static AGING_TICKS: Cell<u64> = const { Cell::new(0) };
    /// The hill climber's hit-rate sampler.
    pub(crate) static LOOKUP_TICKS: Cell<u64> = const { Cell::new(0) };
}

/// Words per block.
const BLOCK: usize = 8;
/// The smallest table, in words (two blocks), and the most (128 MiB).
const MIN_WORDS: u64 = 16;
const MAX_WORDS: u64 = 1 << 24;

/// A word of 16 counters per entry (four counters per key, so about four keys counted per
/// entry held), as Caffeine sizes its sketch; a power of two.
fn words(entries: u64) -> usize {
    entries.clamp(MIN_WORDS, MAX_WORDS).next_power_of_two() as usize
}

/// Sampled informative accesses between two agings for `entries` entries.
fn limit(entries: u64) -> u64 {
    entries.max(1).saturating_mul(AGE_AFTER_PER_ENTRY) / SAMPLE_EVERY
}

impl Sketch {
    /// A sketch for a shard of about `capacity` entries, sized once (an entry-bounded shard).
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            table: (0..words(capacity)).map(|_| AtomicU64::new(0)).collect(),
            samples: AtomicU64::new(0),
            sample_limit: limit(capacity),
            most: capacity,
        }
    }

    /// A sketch that starts at its smallest and grows, through [`fit`](Self::fit), with the
    /// entries the shard holds, up to `most` (a weight-bounded shard, whose entry count the
    /// bound does not tell). Caffeine sizes a weighted cache's sketch by its entry count the
    /// same way.
    pub(crate) fn growing(most: u64) -> Self {
        let mut sketch = Self::new(0);
        sketch.most = most;
        sketch
    }

    /// Sizes the sketch for a shard now holding `entries`: the aging period follows the count
    /// (bounded by `most`), and the table grows to a word per entry when the count outgrows
    /// it. Growing doubles the table at least, so its cost (a copy of the new table, under
    /// the shard's write lock) is amortised over the inserts that filled it: constant per
    /// insert. The counts survive: each key's block in the larger table is a copy of its
    /// block in the smaller one, so every estimate stays what it was, and collisions only
    /// thin out from then on. The table never shrinks.
    ///
    /// After most entries are gone (a shard of large entries that once held many small
    /// ones), the period stays at least an eighth of what the table was grown for, so that
    /// halving a large table is not paid every few accesses.
    pub(crate) fn fit(&mut self, entries: u64) {
        let entries = entries.min(self.most);
        self.sample_limit = limit(entries.max(self.table.len() as u64 / 8));
        let samples = self.samples.get_mut();
        *samples = (*samples).min(self.sample_limit);
        let words = words(entries);
        if words > self.table.len() {
            let old = std::mem::take(&mut self.table);
            self.table = (0..words)
                .map(|word| AtomicU64::new(old[word % old.len()].load(Ordering::Relaxed)))
                .collect();
        }
    }

    /// The table's size in bytes.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.table)
    }

    /// Counts one access to the key with `hash`.
    pub(crate) fn record(&self, hash: u64) {
        let mixed = mix(hash);
        let mut added = false;
        for row in 0..ROWS {
            let (word, shift) = self.slot(mixed, row);
            let cell = &self.table[word];
            let mut current = cell.load(Ordering::Relaxed);
            loop {
                if (current >> shift) & MAX_COUNT == MAX_COUNT {
                    break;
                }
                match cell.compare_exchange_weak(
                    current,
                    current + (1 << shift),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        added = true;
                        break;
                    }
                    Err(now) => current = now,
                }
            }
        }
        // As in Caffeine, only accesses that changed a count move the sketch towards aging:
        // hits on a saturated hot key carry no news.
        if added {
            self.sampled();
        }
    }

    /// Counts one informative access towards aging: one in [`SAMPLE_EVERY`] of each thread's,
    /// so that most accesses do not write the shared word (unbiased, unlike sampling by key).
    fn sampled(&self) {
        if tick(&AGING_TICKS) {
            self.samples.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The estimated number of recent accesses to the key with `hash` (at most 15).
    pub(crate) fn frequency(&self, hash: u64) -> u64 {
        let mixed = mix(hash);
        (0..ROWS)
            .map(|row| {
                let (word, shift) = self.slot(mixed, row);
                (self.table[word].load(Ordering::Relaxed) >> shift) & MAX_COUNT
            })
            .min()
            .unwrap_or(0)
    }

    /// Whether enough accesses were recorded that the counts should age.
    pub(crate) fn due(&self) -> bool {
        self.samples.load(Ordering::Relaxed) >= self.sample_limit.max(1)
    }

    /// Halves every count, so the sketch follows a changing workload. Takes `&mut self`: no
    /// access is recorded meanwhile.
    pub(crate) fn age(&mut self) {
        for cell in &mut self.table {
            *cell.get_mut() = (*cell.get_mut() >> 1) & HALF_MASK;
        }
        *self.samples.get_mut() /= 2;
    }

    /// Row `row`'s counter: a word of the key's block (rows take distinct words) and a nibble.
    fn slot(&self, mixed: u64, row: u64) -> (usize, u32) {
        let blocks = self.table.len() / BLOCK;
        let block = ((mixed >> 32) as usize) & (blocks - 1);
        // Rows 0..4 use words (w + row) mod 8 of the block, and 4 bits each for the nibble.
        let first = (mixed & 7) as usize;
        let word = block * BLOCK + (first + row as usize * 2) % BLOCK;
        let nibble = ((mixed >> (8 + row * 4)) & 15) as u32;
        (word, nibble * 4)
    }
}

/// The shard's hash is good already; this spreads it once more so the sketch's bits are
/// independent of the bits that chose the shard.
fn mix(hash: u64) -> u64 {
    let mixed = (hash ^ (hash >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    mixed ^ (mixed >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> u64 {
        n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (n >> 7)
    }

    #[test]
    fn counts_follow_accesses_and_saturate() {
        let sketch = Sketch::new(1024);
        assert_eq!(sketch.frequency(hash(1)), 0);
        sketch.record(hash(1));
        assert_eq!(sketch.frequency(hash(1)), 1);
        for _ in 0..5 {
            sketch.record(hash(1));
        }
        assert_eq!(sketch.frequency(hash(1)), 6);
        for _ in 0..100 {
            sketch.record(hash(1));
        }
        assert_eq!(sketch.frequency(hash(1)), 15, "counters saturate at 15");
        // Other keys are mostly unaffected (count-min overestimates only on collisions).
        let untouched = (1000..1100)
            .filter(|&n| sketch.frequency(hash(n)) == 0)
            .count();
        assert!(untouched >= 95, "{untouched}");
    }

    #[test]
    fn aging_halves_counts() {
        let mut sketch = Sketch::new(1024);
        for _ in 0..9 {
            sketch.record(hash(7));
        }
        for _ in 0..15 {
            sketch.record(hash(8));
        }
        sketch.age();
        assert_eq!(sketch.frequency(hash(7)), 4);
        assert_eq!(sketch.frequency(hash(8)), 7);
    }

    #[test]
    fn aging_is_due_after_thirty_accesses_per_entry() {
        let mut sketch = Sketch::new(64);
        for n in 0..200 {
            sketch.record(hash(n));
        }
        assert!(!sketch.due(), "200 of the 1920 accesses");
        // Informative accesses until aging is due: about 1920 (one in 8 counted, limit 240).
        let mut n = 200;
        while !sketch.due() {
            sketch.record(hash(n));
            n += 1;
            assert!(n < 3000, "aging never came due");
        }
        assert!(n > 1500, "due after {n} accesses");
        sketch.age();
        assert!(!sketch.due(), "aging halves the count of accesses too");
    }

    /// A weighted shard's sketch starts at two blocks and grows with its entries, keeping
    /// every estimate it had; it never grows past its bound.
    #[test]
    fn growing_keeps_every_estimate_and_stays_bounded() {
        let mut sketch = Sketch::growing(10_000);
        assert_eq!(sketch.bytes(), 16 * 8, "two blocks to start");
        for n in 0..2_000 {
            for _ in 0..n % 9 {
                sketch.record(hash(n));
            }
        }
        let before: Vec<u64> = (0..4_000).map(|n| sketch.frequency(hash(n))).collect();
        sketch.fit(3_000);
        assert_eq!(sketch.bytes(), 4096 * 8, "a word per entry, a power of two");
        let after: Vec<u64> = (0..4_000).map(|n| sketch.frequency(hash(n))).collect();
        assert_eq!(before, after, "growing changed an estimate");
        // Fewer entries: the table stays; more than the bound: it stops at the bound's size.
        sketch.fit(10);
        assert_eq!(sketch.bytes(), 4096 * 8);
        sketch.fit(1 << 30);
        assert_eq!(sketch.bytes(), 16_384 * 8, "10 000 entries at most");
        // A sketch sized once does not grow.
        let mut fixed = Sketch::new(1024);
        fixed.fit(1 << 20);
        assert_eq!(fixed.bytes(), 1024 * 8);
    }

    /// The aging period follows the entries the shard holds now, not a bound in bytes.
    #[test]
    fn a_growing_sketchs_aging_follows_its_entries() {
        let mut sketch = Sketch::growing(1 << 20);
        sketch.fit(64);
        // 64 entries: due after about 1920 informative accesses, as for a fixed 64.
        let mut n = 0;
        while !sketch.due() {
            sketch.record(hash(n));
            n += 1;
            assert!(n < 3000, "aging never came due");
        }
        assert!(n > 1500, "due after {n} accesses");
        // Ten times the entries: ten times the period.
        sketch.age();
        sketch.fit(640);
        for m in 0..3000 {
            sketch.record(hash(1_000_000 + m));
        }
        assert!(!sketch.due(), "640 entries age after about 19 200 accesses");
        // Back to 64 entries of a table grown for 1024: the period stays at least an eighth
        // of the table's (128 entries), and what was counted beyond it ages at once.
        sketch.fit(64);
        assert_eq!(sketch.sample_limit, limit(128));
        assert!(sketch.due());
        sketch.age();
        assert!(!sketch.due());
    }
}

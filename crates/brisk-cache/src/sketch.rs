//! TinyLFU's frequency estimate: a count-min sketch of 4-bit counters that ages, behind a
//! doorkeeper bloom filter that absorbs one-hit wonders (Einziger, Friedman and Manes,
//! "TinyLFU: A Highly Efficient Cache Admission Policy", 2017).
//!
//! Counters are updated with atomics so that a hit records its access under a shard's read
//! lock; aging halves every counter and clears the doorkeeper, under the shard's write lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Four counters per key, one in each of four rows.
const ROWS: u64 = 4;
/// A 4-bit counter saturates here.
const MAX_COUNT: u64 = 15;
/// Every nibble's low three bits: halving a word keeps each counter inside its nibble.
const HALF_MASK: u64 = 0x7777_7777_7777_7777;

pub(crate) struct Sketch {
    /// 16 four-bit counters per word.
    table: Box<[AtomicU64]>,
    /// One bit per slot, set on a key's first sighting.
    door: Box<[AtomicU64]>,
    /// Accesses recorded since the last aging.
    samples: AtomicU64,
    /// Age after this many accesses: ten per entry the shard holds, as the paper advises.
    sample_limit: u64,
}

impl Sketch {
    /// A sketch for a shard of about `capacity` entries.
    pub(crate) fn new(capacity: u64) -> Self {
        let words = capacity.clamp(16, 1 << 24).next_power_of_two() as usize;
        Self {
            table: (0..words).map(|_| AtomicU64::new(0)).collect(),
            // 64 doorkeeper bits per word: as many bits as counters, which keeps its false
            // positives low for the sample period.
            door: (0..words / 4).map(|_| AtomicU64::new(0)).collect(),
            samples: AtomicU64::new(0),
            sample_limit: capacity.max(1).saturating_mul(10),
        }
    }

    /// Counts one access to the key with `hash`.
    pub(crate) fn record(&self, hash: u64) {
        self.samples.fetch_add(1, Ordering::Relaxed);
        let (word, bit) = self.door_slot(hash);
        let door = &self.door[word];
        if door.load(Ordering::Relaxed) & bit == 0 {
            door.fetch_or(bit, Ordering::Relaxed);
            return;
        }
        for row in 0..ROWS {
            let (word, shift) = self.slot(hash, row);
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
                    Ok(_) => break,
                    Err(now) => current = now,
                }
            }
        }
    }

    /// The estimated number of recent accesses to the key with `hash` (at most 16).
    pub(crate) fn frequency(&self, hash: u64) -> u64 {
        let (word, bit) = self.door_slot(hash);
        let door = u64::from(self.door[word].load(Ordering::Relaxed) & bit != 0);
        let counted = (0..ROWS)
            .map(|row| {
                let (word, shift) = self.slot(hash, row);
                (self.table[word].load(Ordering::Relaxed) >> shift) & MAX_COUNT
            })
            .min()
            .unwrap_or(0);
        counted + door
    }

    /// Whether enough accesses were recorded that the counts should age.
    pub(crate) fn due(&self) -> bool {
        self.samples.load(Ordering::Relaxed) >= self.sample_limit
    }

    /// Halves every count and clears the doorkeeper, so the sketch follows a changing
    /// workload. Takes `&mut self`: no access is recorded meanwhile.
    pub(crate) fn age(&mut self) {
        for cell in &mut self.table {
            *cell.get_mut() = (*cell.get_mut() >> 1) & HALF_MASK;
        }
        for bits in &mut self.door {
            *bits.get_mut() = 0;
        }
        *self.samples.get_mut() /= 2;
    }

    fn slot(&self, hash: u64, row: u64) -> (usize, u32) {
        // A different odd multiplier per row makes the rows independent enough.
        let mixed = (hash ^ (hash >> 29))
            .wrapping_mul(
                0x9E37_79B9_7F4A_7C15_u64.wrapping_add(row.wrapping_mul(0xD6E8_FEB8_6659_FD93)),
            )
            .rotate_left(17 + row as u32 * 7);
        let word = (mixed as usize) & (self.table.len() - 1);
        let nibble = (mixed >> 58) as u32 & 15;
        (word, nibble * 4)
    }

    fn door_slot(&self, hash: u64) -> (usize, u64) {
        let mixed = hash.wrapping_mul(0xA24B_AED4_963E_E407).rotate_left(29);
        let word = (mixed as usize) & (self.door.len() - 1);
        (word, 1 << (mixed >> 58))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> u64 {
        n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (n >> 7)
    }

    #[test]
    fn counts_follow_accesses_after_the_doorkeeper() {
        let sketch = Sketch::new(1024);
        assert_eq!(sketch.frequency(hash(1)), 0);
        sketch.record(hash(1));
        assert_eq!(
            sketch.frequency(hash(1)),
            1,
            "the first sighting sets the doorkeeper"
        );
        for _ in 0..5 {
            sketch.record(hash(1));
        }
        assert_eq!(sketch.frequency(hash(1)), 6);
        for _ in 0..100 {
            sketch.record(hash(1));
        }
        assert_eq!(sketch.frequency(hash(1)), 16, "counters saturate at 15");
        // Other keys are mostly unaffected (count-min overestimates only on collisions).
        let untouched = (1000..1100)
            .filter(|&n| sketch.frequency(hash(n)) == 0)
            .count();
        assert!(untouched >= 95, "{untouched}");
    }

    #[test]
    fn aging_halves_counts_and_clears_the_doorkeeper() {
        let mut sketch = Sketch::new(16);
        for _ in 0..9 {
            sketch.record(hash(7));
        }
        assert_eq!(sketch.frequency(hash(7)), 9);
        assert!(!sketch.due());
        for n in 0..200 {
            sketch.record(hash(n + 100));
        }
        assert!(sketch.due());
        sketch.age();
        assert_eq!(sketch.frequency(hash(7)), 4);
        assert!(!sketch.due());
    }
}

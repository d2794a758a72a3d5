//! Lock-free recording: per-stripe arrays of atomic counts laid out exactly like hdrhistogram's
//! buckets, merged into a real `hdrhistogram::Histogram` on read.
//!
//! A record is one relaxed `fetch_add` on a cache line that (almost always) only the recording
//! thread touches: threads are spread over stripes, and count arrays are allocated per stripe,
//! lazily, one power-of-two range of values at a time, so a series that sees only
//! milliseconds never pays for the hours range.

use std::{
    cell::Cell,
    sync::{
        OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
};

use hdrhistogram::Histogram as Hdr;

use crate::error::{Error, Result};

/// Precision and range of a histogram, as hdrhistogram defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) low: u64,
    pub(crate) high: u64,
    pub(crate) sigfig: u8,
}

impl Config {
    /// An empty hdrhistogram with this configuration (also validates it).
    pub(crate) fn hdr(&self) -> Result<Hdr<u64>> {
        self.hdr_for("histogram range")
    }

    /// [`hdr`](Self::hdr), a refused range named as the builder method `range` that set it.
    pub(crate) fn hdr_for(&self, range: &'static str) -> Result<Hdr<u64>> {
        use hdrhistogram::CreationError as Refused;
        Hdr::new_with_bounds(self.low, self.high, self.sigfig).map_err(|refused| {
            let (setting, reason) = match refused {
                Refused::SigFigExceedsMax => ("significant_digits", "from 0 to 5 digits"),
                Refused::CannotRepresentSigFigBeyondLow => (
                    "significant_digits",
                    "fewer digits, or a range whose low end is smaller",
                ),
                Refused::LowIsZero => (range, "a low end of at least 1"),
                Refused::LowExceedsMax => (range, "a smaller low end"),
                Refused::HighLessThanTwiceLow => (range, "a high end at least twice the low end"),
                Refused::UsizeTypeTooSmall => (range, "a range this platform can index"),
            };
            Error::Config {
                setting,
                value: format!(
                    "{}..={} with {} significant digits",
                    self.low, self.high, self.sigfig
                ),
                reason,
            }
        })
    }
}

/// hdrhistogram's index arithmetic (same formulas, so index `i` here is index `i` there).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    unit_magnitude: u32,
    half_magnitude: u32,
    half_count: u64,
    sub_bucket_mask: u64,
    leading_zero_count_base: u32,
    /// Number of counts, i.e. `chunks * half_count`.
    len: usize,
}

impl Layout {
    pub(crate) fn new(config: Config) -> Result<Self> {
        let hdr = config.hdr()?;
        let largest = 2 * 10_u64.pow(u32::from(config.sigfig));
        let unit_magnitude = 63 - config.low.leading_zeros();
        let sub_bucket_count_magnitude = 64 - (largest - 1).leading_zeros();
        let half_magnitude = sub_bucket_count_magnitude - 1;
        Ok(Self {
            unit_magnitude,
            half_magnitude,
            half_count: 1 << half_magnitude,
            sub_bucket_mask: ((1u64 << sub_bucket_count_magnitude) - 1) << unit_magnitude,
            leading_zero_count_base: 64 - unit_magnitude - sub_bucket_count_magnitude,
            len: hdr.distinct_values(),
        })
    }

    #[inline]
    pub(crate) fn index_for(&self, value: u64) -> usize {
        let bucket = self.leading_zero_count_base - (value | self.sub_bucket_mask).leading_zeros();
        let sub_bucket = value >> (bucket + self.unit_magnitude);
        // For bucket 0 the sub-bucket may lie in the lower half; the base then compensates.
        ((u64::from(bucket + 1) << self.half_magnitude) + sub_bucket - self.half_count) as usize
    }

    /// The lowest value that lands in `index`.
    pub(crate) fn value_for(&self, index: usize) -> u64 {
        let index = index as u64;
        let bucket = (index >> self.half_magnitude) as i64 - 1;
        let mut sub_bucket = (index & (self.half_count - 1)) + self.half_count;
        let bucket = if bucket < 0 {
            sub_bucket -= self.half_count;
            0
        } else {
            bucket as u32
        };
        sub_bucket << (bucket + self.unit_magnitude)
    }

    /// The highest value that lands in `index` (hdrhistogram's `highest_equivalent`).
    fn highest_for(&self, index: usize) -> u64 {
        self.value_for(index) + (self.range_for(index) - 1)
    }

    /// The middle of `index`'s range (hdrhistogram's `median_equivalent`).
    fn median_for(&self, index: usize) -> u64 {
        self.value_for(index) + (self.range_for(index) >> 1)
    }

    /// How many values share `index`.
    fn range_for(&self, index: usize) -> u64 {
        let bucket = ((index as u64) >> self.half_magnitude).saturating_sub(1);
        1 << (bucket + u64::from(self.unit_magnitude))
    }

    fn chunk_len(&self) -> usize {
        self.half_count as usize
    }

    /// Words of a chunk's occupancy bitmap, one bit per count, stored before the counts.
    fn bitmap_words(&self) -> usize {
        self.chunk_len().div_ceil(64)
    }

    fn chunks(&self) -> usize {
        self.len.div_ceil(self.chunk_len())
    }
}

/// How many stripes new series get: the machine's parallelism rounded up to a power of two,
/// at most 8 (memory per series grows with it).
pub(crate) fn default_stripes() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .next_power_of_two()
        .min(8)
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// A small per-thread number, handed out round-robin, that spreads threads over stripes.
#[inline]
fn thread_slot() -> usize {
    THREAD_SLOT.with(|slot| {
        let mut value = slot.get();
        if value == usize::MAX {
            value = NEXT_THREAD.fetch_add(1, Relaxed);
            slot.set(value);
        }
        value
    })
}

/// One power-of-two range of counts, allocated on its first record: an occupancy bitmap (one
/// bit per count, [`Layout::bitmap_words`] words) followed by the counts.
type Chunk = Box<[AtomicU64]>;

/// One stripe: lazily allocated chunks of counts.
#[derive(Debug)]
struct Stripe {
    chunks: Box<[OnceLock<Chunk>]>,
}

/// A concurrent histogram: lock-free, exact counts, bounded memory
/// (`stripes × touched ranges × half_count × 8` bytes at most).
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    config: Config,
    layout: Layout,
    stripes: Box<[Stripe]>,
    stripe_mask: usize,
    /// Values above `high`, recorded as `high`.
    saturated: AtomicU64,
}

impl AtomicHistogram {
    pub(crate) fn new(config: Config, stripes: usize) -> Result<Self> {
        let layout = Layout::new(config)?;
        let stripes = stripes.max(1).next_power_of_two();
        Ok(Self {
            config,
            layout,
            stripes: (0..stripes)
                .map(|_| Stripe {
                    chunks: (0..layout.chunks()).map(|_| OnceLock::new()).collect(),
                })
                .collect(),
            stripe_mask: stripes - 1,
            saturated: AtomicU64::new(0),
        })
    }

    /// Records one value; a value above the highest trackable one is recorded as that value
    /// and counted as saturated.
    #[inline]
    pub(crate) fn record(&self, value: u64) {
        let value = if value > self.config.high {
            self.saturated.fetch_add(1, Relaxed);
            self.config.high
        } else {
            value
        };
        let index = self.layout.index_for(value);
        let stripe = &self.stripes[thread_slot() & self.stripe_mask];
        // A chunk is `half_count` long, a power of two: a shift and a mask, not a division
        // (which alone would cost about as much as the rest of the record).
        let chunk = stripe.chunks[index >> self.layout.half_magnitude].get_or_init(|| {
            (0..self.layout.bitmap_words() + self.layout.chunk_len())
                .map(|_| AtomicU64::new(0))
                .collect()
        });
        let slot = index & (self.layout.chunk_len() - 1);
        chunk[self.layout.bitmap_words() + slot].fetch_add(1, Relaxed);
        // Marks the count as used, so a snapshot reads only used counts. Read first: once the
        // bit is set (after a value's first record) the line is only read.
        let (word, bit) = (&chunk[slot >> 6], 1 << (slot & 63));
        if word.load(Relaxed) & bit == 0 {
            word.fetch_or(bit, Relaxed);
        }
    }

    /// Values recorded above the highest trackable value (and so recorded as it).
    pub(crate) fn saturated(&self) -> u64 {
        self.saturated.load(Relaxed)
    }

    /// Merges every stripe's counts, visiting only the ranges some stripe has touched.
    /// Concurrent records may or may not be included; none is ever lost.
    pub(crate) fn merged(&self) -> Merged {
        let mut merged = Merged::empty(self.layout);
        self.merge_into(&mut merged);
        merged
    }

    /// [`merged`](Self::merged), into `out` (its buffer reused across series).
    pub(crate) fn merge_into(&self, out: &mut Merged) {
        let chunk_len = self.layout.chunk_len();
        let words = self.layout.bitmap_words();
        out.layout = self.layout;
        out.counts.clear();
        let (counts, mut total, mut sum) = (&mut out.counts, 0_u64, 0.0_f64);
        let mut touched: Vec<&Chunk> = Vec::with_capacity(self.stripes.len());
        let mut used = vec![0_u64; words];
        for c in 0..self.layout.chunks() {
            touched.clear();
            touched.extend(
                self.stripes
                    .iter()
                    .filter_map(|stripe| stripe.chunks[c].get()),
            );
            if touched.is_empty() {
                continue;
            }
            // The counts any stripe has used; a count whose bit is not yet visible belongs
            // to a record still under way, and the next snapshot has it.
            used.fill(0);
            for chunk in &touched {
                for (word, bits) in used.iter_mut().zip(chunk.iter()) {
                    *word |= bits.load(Relaxed);
                }
            }
            let base = c * chunk_len;
            // Every count of a chunk has the same range width: the sum of its values is
            // summed in integers, then scaled once.
            let (mut chunk_total, mut chunk_sum) = (0_u64, 0_u128);
            for (w, &word) in used.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let slot = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let n = match touched.as_slice() {
                        [only] => only[words + slot].load(Relaxed),
                        all => all.iter().fold(0_u64, |sum, chunk| {
                            sum.saturating_add(chunk[words + slot].load(Relaxed))
                        }),
                    };
                    if n > 0 {
                        counts.push((base + slot, n));
                        chunk_total = chunk_total.saturating_add(n);
                        chunk_sum += u128::from(self.layout.value_for(base + slot)) * u128::from(n);
                    }
                }
            }
            total = total.saturating_add(chunk_total);
            // Each value is taken at the middle of its range, as hdrhistogram's mean does.
            let half_range = u128::from(self.layout.range_for(base) >> 1);
            sum += (chunk_sum + half_range * u128::from(chunk_total)) as f64;
        }
        (out.total, out.sum) = (total, sum);
    }

    /// Merges every stripe into an hdrhistogram (tests compare [`Merged`] against it).
    #[cfg(test)]
    fn to_hdr(&self) -> Hdr<u64> {
        let mut hdr = self.config.hdr().expect("config validated at construction");
        for (index, n) in self.merged().counts {
            hdr.saturating_record_n(self.layout.value_for(index), n);
        }
        hdr
    }

    /// Bytes of heap this series holds now.
    pub(crate) fn heap_bytes(&self) -> usize {
        let chunk_bytes = (self.layout.bitmap_words() + self.layout.chunk_len())
            * std::mem::size_of::<AtomicU64>();
        self.stripes
            .iter()
            .map(|stripe| {
                stripe.chunks.len() * std::mem::size_of::<OnceLock<Chunk>>()
                    + stripe.chunks.iter().filter(|c| c.get().is_some()).count() * chunk_bytes
            })
            .sum::<usize>()
            + self.stripes.len() * std::mem::size_of::<Stripe>()
    }
}

/// A histogram's counts merged over its stripes: each non-empty index with its count, in
/// index (so value) order. What a snapshot reads; answers as hdrhistogram would for the same
/// counts, without building its dense array (tens of thousands of slots per series).
#[derive(Debug, Clone)]
pub(crate) struct Merged {
    layout: Layout,
    counts: Vec<(usize, u64)>,
    total: u64,
    /// The sum of the values, each taken at the middle of its range.
    sum: f64,
}

impl Merged {
    /// No values, to be filled by [`AtomicHistogram::merge_into`].
    pub(crate) fn empty(layout: Layout) -> Self {
        Self {
            layout,
            counts: Vec::new(),
            total: 0,
            sum: 0.0,
        }
    }

    /// Values recorded.
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    /// The lowest value recorded, to the histogram's precision (0 when empty).
    pub(crate) fn min(&self) -> u64 {
        self.counts
            .first()
            .map_or(0, |&(index, _)| self.layout.value_for(index))
    }

    /// The highest value recorded, to the histogram's precision (0 when empty).
    pub(crate) fn max(&self) -> u64 {
        self.counts
            .last()
            .map_or(0, |&(index, _)| self.layout.highest_for(index))
    }

    /// The sum of the values, each taken at the middle of its range (as hdrhistogram's mean).
    pub(crate) fn sum(&self) -> f64 {
        self.sum
    }

    /// The value at `quantile` (0..=1), as hdrhistogram's `value_at_quantile` (0 when empty).
    #[cfg(test)]
    pub(crate) fn value_at_quantile(&self, quantile: f64) -> u64 {
        self.values_at_quantiles([quantile])[0]
    }

    /// The values at ascending `quantiles` (each 0..=1), in one pass over the counts, as
    /// hdrhistogram's `value_at_quantile` gives them (0 when empty).
    pub(crate) fn values_at_quantiles<const N: usize>(&self, quantiles: [f64; N]) -> [u64; N] {
        let mut values = [0; N];
        let mut entries = self.counts.iter();
        let mut seen = 0_u64;
        let mut at = None;
        for (value, quantile) in values.iter_mut().zip(quantiles) {
            let quantile = quantile.min(1.0);
            let wanted = ((quantile * self.total as f64).ceil() as u64).max(1);
            while seen < wanted {
                let Some(&(index, n)) = entries.next() else {
                    break;
                };
                seen = seen.saturating_add(n);
                at = Some(index);
            }
            let Some(index) = at.filter(|_| seen >= wanted) else {
                break;
            };
            *value = if quantile == 0.0 {
                self.layout.value_for(index)
            } else {
                self.layout.highest_for(index)
            };
        }
        values
    }

    /// Counts at each of `limits` (ascending): how many values were at most each, to the
    /// histogram's precision (a value counts if its range starts at or below the limit, as
    /// hdrhistogram's `count_between(0, limit)`).
    pub(crate) fn counts_at_most(&self, limits: impl Iterator<Item = u64>) -> Vec<u64> {
        let mut cumulative = 0_u64;
        let mut next = self.counts.iter().peekable();
        let last = self.layout.len - 1;
        limits
            .map(|limit| {
                let top = if limit >= self.layout.value_for(last) {
                    last
                } else {
                    self.layout.index_for(limit)
                };
                while let Some(&&(index, n)) = next.peek() {
                    if index > top {
                        break;
                    }
                    cumulative = cumulative.saturating_add(n);
                    next.next();
                }
                cumulative
            })
            .collect()
    }

    /// What was recorded since `earlier`, a merge of the same histogram taken before (counts
    /// only grow; one that did not is taken as 0).
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        let mut before = earlier.counts.iter().peekable();
        let mut since = Self::empty(self.layout);
        for &(index, n) in &self.counts {
            while before.next_if(|&&(i, _)| i < index).is_some() {}
            let old = before.next_if(|&&(i, _)| i == index).map_or(0, |&(_, n)| n);
            let delta = n.saturating_sub(old);
            if delta > 0 {
                since.counts.push((index, delta));
                since.total += delta;
                since.sum += self.layout.median_for(index) as f64 * delta as f64;
            }
        }
        since
    }
}

/// A counter spread over cache-line-sized stripes so that threads do not contend on one line.
#[derive(Debug)]
pub(crate) struct StripedCounter {
    stripes: Box<[Padded]>,
    mask: usize,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl StripedCounter {
    pub(crate) fn new(stripes: usize) -> Self {
        let stripes = stripes.max(1).next_power_of_two();
        Self {
            stripes: (0..stripes).map(|_| Padded::default()).collect(),
            mask: stripes - 1,
        }
    }

    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.stripes[thread_slot() & self.mask]
            .0
            .fetch_add(n, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.stripes
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CONFIGS: [Config; 4] = [
        Config {
            low: 1,
            high: 3_600_000_000,
            sigfig: 3,
        },
        Config {
            low: 1,
            high: 1 << 40,
            sigfig: 2,
        },
        Config {
            low: 1000,
            high: 1 << 50,
            sigfig: 4,
        },
        Config {
            low: 7,
            high: 100_000,
            sigfig: 1,
        },
    ];

    proptest! {
        /// Index `i` here is index `i` in hdrhistogram: its lowest equivalent value matches.
        #[test]
        fn layout_matches_hdrhistogram(value in any::<u64>(), which in 0..CONFIGS.len()) {
            let config = CONFIGS[which];
            let value = value % (config.high + 1);
            let layout = Layout::new(config).unwrap();
            let hdr = config.hdr().unwrap();
            let index = layout.index_for(value);
            prop_assert!(index < layout.len);
            prop_assert_eq!(layout.value_for(index), hdr.lowest_equivalent(value));
        }
    }

    proptest! {
        /// A snapshot reads `Merged`; every answer it gives is hdrhistogram's for the same
        /// values: quantiles, min, max, mean, cumulative bucket counts, and interval deltas.
        #[test]
        fn merged_answers_as_hdrhistogram_does(
            which in 0..CONFIGS.len(),
            first in proptest::collection::vec(any::<u64>(), 0..300),
            second in proptest::collection::vec(any::<u64>(), 0..300),
            limits in proptest::collection::vec(any::<u64>(), 0..12),
            spread in 1_u64..64,
        ) {
            let config = CONFIGS[which];
            // Values over several orders of magnitude, some above the range (saturating).
            let value = |raw: u64| raw % (config.high / spread + 2).max(2) * (raw % spread + 1);
            let ours = AtomicHistogram::new(config, 4).unwrap();
            let mut theirs = config.hdr().unwrap();
            let on_thread = |values: &[u64]| {
                std::thread::scope(|scope| {
                    for part in values.chunks(values.len().div_ceil(3).max(1)) {
                        let ours = &ours;
                        scope.spawn(move || part.iter().for_each(|&v| ours.record(v)));
                    }
                });
            };
            let values: Vec<u64> = first.iter().map(|&raw| value(raw)).collect();
            on_thread(&values);
            for &v in &values {
                theirs.saturating_record(v.min(config.high));
            }
            let earlier = ours.merged();
            let theirs_earlier = theirs.clone();
            let more: Vec<u64> = second.iter().map(|&raw| value(raw)).collect();
            on_thread(&more);
            for &v in &more {
                theirs.saturating_record(v.min(config.high));
            }
            let merged = ours.merged();
            prop_assert_eq!(merged.len(), theirs.len());
            let quantiles = [0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];
            let together = merged.values_at_quantiles(quantiles);
            for (q, value) in quantiles.into_iter().zip(together) {
                let expected = if theirs.is_empty() { 0 } else { theirs.value_at_quantile(q) };
                prop_assert_eq!(merged.value_at_quantile(q), expected, "q {}", q);
                prop_assert_eq!(value, expected, "q {} in one pass", q);
            }
            if !theirs.is_empty() {
                prop_assert_eq!(merged.min(), theirs.min());
                prop_assert_eq!(merged.max(), theirs.highest_equivalent(theirs.max()));
                let mean = merged.sum() / merged.len() as f64;
                prop_assert!((mean - theirs.mean()).abs() <= theirs.mean() * 1e-9 + 1e-9);
            }
            let mut limits = limits;
            limits.sort_unstable();
            let counted = merged.counts_at_most(limits.iter().copied());
            for (limit, count) in limits.iter().zip(counted) {
                prop_assert_eq!(count, theirs.count_between(0, *limit), "limit {}", limit);
            }
            let delta = merged.since(&earlier);
            let mut theirs_delta = theirs.clone();
            theirs_delta.subtract(&theirs_earlier).unwrap();
            prop_assert_eq!(delta.len(), theirs_delta.len());
            for q in [0.5, 0.99, 1.0] {
                let expected = if theirs_delta.is_empty() { 0 } else { theirs_delta.value_at_quantile(q) };
                prop_assert_eq!(delta.value_at_quantile(q), expected);
            }
        }
    }

    #[test]
    fn merged_counts_equal_direct_hdrhistogram() {
        let config = CONFIGS[0];
        let ours = AtomicHistogram::new(config, 4).unwrap();
        let mut theirs = config.hdr().unwrap();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let value = x % 5_000_000;
            ours.record(value);
            theirs.record(value).unwrap();
        }
        let merged = ours.to_hdr();
        assert_eq!(merged.len(), theirs.len());
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.value_at_quantile(q),
                theirs.value_at_quantile(q),
                "q {q}"
            );
        }
        assert_eq!(merged.max(), theirs.max());
        assert_eq!(merged.min(), theirs.min());
    }

    #[test]
    fn values_above_high_saturate_and_are_counted() {
        let h = AtomicHistogram::new(
            Config {
                low: 1,
                high: 1000,
                sigfig: 2,
            },
            1,
        )
        .unwrap();
        h.record(5000);
        h.record(u64::MAX);
        h.record(10);
        let hdr = h.to_hdr();
        assert_eq!(hdr.len(), 3);
        assert_eq!(h.saturated(), 2);
        assert!(hdr.equivalent(hdr.max(), 1000));
    }

    #[test]
    fn memory_grows_only_with_touched_ranges() {
        let h = AtomicHistogram::new(CONFIGS[0], 1).unwrap();
        let empty = h.heap_bytes();
        h.record(1500);
        h.record(1600);
        let one_range = h.heap_bytes();
        assert!(one_range > empty);
        h.record(1700);
        assert_eq!(h.heap_bytes(), one_range);
    }
}

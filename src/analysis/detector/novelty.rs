//! How surprising a value is against its own past: a sliding window of block extremes (the largest
//! and smallest value of every block of samples) with an exponential tail fitted to the most extreme.

use serde::{Deserialize, Serialize};

/// Blocks of history kept per feature (the window is `BLOCKS × block_len` samples).
pub const BLOCKS: usize = 256;
/// Blocks needed before anything is judged.
const MIN_BLOCKS: usize = 12;
/// Fraction of the most extreme blocks the exponential tail is fitted to.
const TAIL_FRACTION: f64 = 0.1;
/// Most of the extreme blocks (a fraction, at least three) left out of the tail's fit as outliers,
/// so one or two earlier outliers in the history do not make the next one look ordinary; a series
/// where outliers are common still has them in its tail.
const TRIM_FRACTION: f64 = 0.02;
const MIN_TRIM: usize = 3;
/// How far beyond the rest's tail (in its scales) a block must lie to be left out as an outlier.
const OUTLIER_SCALES: f64 = 8.0;
/// Smallest probability reported: surprise is capped at 12 decimal digits.
pub const MAX_SURPRISE: f64 = 12.0;
const MIN_P: f64 = 1e-12;
/// The tail's scale is at least this fraction of the typical block range, so a history that
/// never moved does not make the tiniest change infinitely surprising.
const MIN_TAIL_SCALE: f64 = 0.1;

/// Tail fitted to one side: beyond the `k`-th most extreme block (`start`), the probability of a
/// block reaching `x` falls as `k/(n+1) · (1 + (x - start) / (2k · scale))^(-2k)`, where `scale` is
/// the mean excess of the `k` most extreme blocks over `start`. That is the exponential tail
/// `exp(-(x - start) / scale)` made heavier by the uncertainty of a scale estimated from few
/// points (the predictive tail of an exponential whose rate has a Gamma posterior of shape 2k):
/// with a short history, far-out values are judged less confidently.
/// Values are oriented so that "more extreme" is larger (the lower side is negated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Tail {
    start: f64,
    scale: f64,
    k: u32,
}

/// History of one feature, in fixed memory: `BLOCKS` blocks of `block_len` samples.
///
/// [`surprise`](Self::surprise) answers "how unusual is `x`": `-log10 p` where `p` is the chance
/// that a block of the history reaches at least as far (above the median block maximum, or below
/// the median block minimum). Inside the observed range `p` is the empirical rank; in the top
/// tenth and beyond, a tail fitted to that tenth keeps grading how far out `x` is (a
/// peaks-over-threshold estimate). Blocks rather than single samples make the history long for its
/// memory and insensitive to how many samples a short burst has.
///
/// Compact: each block's extremes are kept as `f32` offsets from a reference value (from the
/// first block), sorted, each with the low byte of its block's sequence number (unique among the
/// `BLOCKS` = 256 live blocks) so the oldest block can be found and evicted: 10 bytes per block,
/// 2.5 KiB per history. Persisted oldest block first, 8 bytes per block;
/// the sorted copies and fitted tails are rebuilt on load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "Saved", into = "Saved")]
pub struct ExtremeHistory {
    block_len: u32,
    in_block: u32,
    cur_max: f64,
    cur_min: f64,
    /// Offsets are relative to this (a value of the first block), so a large common offset such
    /// as 1e9 + small noise keeps its resolution in `f32`.
    reference: Option<f64>,
    /// Sequence number of the next finished block (wrapping).
    seq: u16,
    /// Block maxima and minima as offsets, each sorted ascending, with their blocks' numbers
    /// (modulo 256).
    hi: Vec<f32>,
    hi_seq: Vec<u8>,
    lo: Vec<f32>,
    lo_seq: Vec<u8>,
    upper: Tail,
    lower: Tail,
}

impl ExtremeHistory {
    /// A history of about `window` samples (rounded up to whole blocks of `BLOCKS`).
    pub fn new(window: usize) -> Self {
        ExtremeHistory {
            block_len: block_len(window),
            in_block: 0,
            cur_max: f64::NEG_INFINITY,
            cur_min: f64::INFINITY,
            reference: None,
            seq: 0,
            hi: Vec::new(),
            hi_seq: Vec::new(),
            lo: Vec::new(),
            lo_seq: Vec::new(),
            upper: Tail::default(),
            lower: Tail::default(),
        }
    }

    /// Blocks of history so far.
    pub fn blocks(&self) -> usize {
        self.hi.len()
    }

    /// Whether the history holds enough blocks to judge.
    pub fn ready(&self) -> bool {
        self.hi.len() >= MIN_BLOCKS
    }

    /// `-log10 p` of `x` against the history (0 = ordinary, up to [`MAX_SURPRISE`]), and whether it
    /// is on the high side. 0 until the history holds a few blocks, and for non-finite `x`.
    pub fn surprise(&self, x: f64) -> (f64, bool) {
        let n = self.hi.len();
        let Some(r) = self.reference else {
            return (0.0, true);
        };
        if n < MIN_BLOCKS || !x.is_finite() {
            return (0.0, true);
        }
        let d = x - r;
        if d > f64::from(self.hi[n / 2]) {
            let beyond = n - self.hi.partition_point(|&y| f64::from(y) < d);
            (-tail_p(d, beyond, n, self.upper).log10(), true)
        } else if d < f64::from(self.lo[n / 2]) {
            let beyond = self.lo.partition_point(|&y| f64::from(y) <= d);
            (-tail_p(-d, beyond, n, self.lower).log10(), false)
        } else {
            (0.0, true)
        }
    }

    /// Adds a sample (non-finite values are ignored).
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.cur_max = self.cur_max.max(x);
        self.cur_min = self.cur_min.min(x);
        self.in_block += 1;
        if self.in_block < self.block_len {
            return;
        }
        let r = *self.reference.get_or_insert(x);
        let (max, min) = (offset(self.cur_max, r), offset(self.cur_min, r));
        self.in_block = 0;
        self.cur_max = f64::NEG_INFINITY;
        self.cur_min = f64::INFINITY;
        if self.hi.len() >= BLOCKS {
            let oldest = low_byte(self.seq.wrapping_sub(BLOCKS as u16));
            evict(&mut self.hi, &mut self.hi_seq, oldest);
            evict(&mut self.lo, &mut self.lo_seq, oldest);
        }
        insert(&mut self.hi, &mut self.hi_seq, max, low_byte(self.seq));
        insert(&mut self.lo, &mut self.lo_seq, min, low_byte(self.seq));
        self.seq = self.seq.wrapping_add(1);
        self.refit();
    }

    fn refit(&mut self) {
        let n = self.hi.len();
        if n < MIN_BLOCKS || self.lo.len() != n {
            return;
        }
        let spread = f64::from(self.hi[n / 2]) - f64::from(self.lo[n / 2]);
        let hi = &self.hi;
        let lo = &self.lo;
        self.upper = fit(n, spread.abs(), |i| f64::from(hi[n - 1 - i]));
        self.lower = fit(n, spread.abs(), |i| -f64::from(lo[i]));
    }

    /// Blocks as (max, min) offsets, oldest first.
    fn in_order(&self) -> Vec<(f32, f32)> {
        let n = self.hi.len();
        let first = low_byte(self.seq.wrapping_sub(n as u16));
        let mut out = vec![(0.0f32, 0.0f32); n];
        for (v, s) in self.hi.iter().zip(&self.hi_seq) {
            if let Some(slot) = out.get_mut(s.wrapping_sub(first) as usize) {
                slot.0 = *v;
            }
        }
        for (v, s) in self.lo.iter().zip(&self.lo_seq) {
            if let Some(slot) = out.get_mut(s.wrapping_sub(first) as usize) {
                slot.1 = *v;
            }
        }
        out
    }
}

/// A block's number as kept beside its extremes: 256 numbers tell the live blocks apart.
const _: () = assert!(BLOCKS <= 256);
fn low_byte(seq: u16) -> u8 {
    (seq & 0xff) as u8
}

/// `x - reference` in `f32`, finite (clamped to the `f32` range).
fn offset(x: f64, reference: f64) -> f32 {
    ((x - reference).clamp(f64::from(f32::MIN), f64::from(f32::MAX))) as f32
}

fn insert(values: &mut Vec<f32>, seqs: &mut Vec<u8>, x: f32, seq: u8) {
    let i = values.partition_point(|&y| y < x);
    values.insert(i, x);
    seqs.insert(i, seq);
}

fn evict(values: &mut Vec<f32>, seqs: &mut Vec<u8>, seq: u8) {
    if let Some(i) = seqs.iter().position(|&s| s == seq) {
        values.remove(i);
        seqs.remove(i);
    }
}

/// The persisted form of an [`ExtremeHistory`].
#[derive(Serialize, Deserialize)]
struct Saved {
    block_len: u32,
    in_block: u32,
    cur_max: f64,
    cur_min: f64,
    reference: Option<f64>,
    /// Sequence number of the next block.
    seq: u16,
    /// (max, min) offsets of each block, oldest first.
    blocks: Vec<(f32, f32)>,
}

impl From<ExtremeHistory> for Saved {
    fn from(h: ExtremeHistory) -> Self {
        Saved {
            blocks: h.in_order(),
            block_len: h.block_len,
            in_block: h.in_block,
            cur_max: h.cur_max,
            cur_min: h.cur_min,
            reference: h.reference,
            seq: h.seq,
        }
    }
}

impl From<Saved> for ExtremeHistory {
    fn from(s: Saved) -> Self {
        let mut h = ExtremeHistory::new(1);
        h.block_len = s.block_len.max(1);
        h.in_block = s.in_block.min(h.block_len);
        h.cur_max = s.cur_max;
        h.cur_min = s.cur_min;
        h.reference = s.reference.filter(|r| r.is_finite());
        let skip = s.blocks.len().saturating_sub(BLOCKS);
        let blocks: Vec<(f32, f32)> = s.blocks[skip..]
            .iter()
            .copied()
            .filter(|(max, min)| max.is_finite() && min.is_finite())
            .collect();
        h.seq = s.seq.wrapping_sub(blocks.len() as u16);
        for (max, min) in blocks {
            insert(&mut h.hi, &mut h.hi_seq, max, low_byte(h.seq));
            insert(&mut h.lo, &mut h.lo_seq, min, low_byte(h.seq));
            h.seq = h.seq.wrapping_add(1);
        }
        h.refit();
        h
    }
}

fn block_len(window: usize) -> u32 {
    u32::try_from(window.div_ceil(BLOCKS).max(1)).unwrap_or(u32::MAX)
}

/// Fits the exponential tail to the `k` most extreme of `n` oriented values (`v(0)` the most
/// extreme), leaving out the most extreme ones as outliers: the most (up to [`TRIM_FRACTION`]) such
/// that the last one left out lies more than [`OUTLIER_SCALES`] tail scales beyond the fit of the
/// rest.
fn fit(n: usize, spread: f64, v: impl Fn(usize) -> f64) -> Tail {
    let max_trim = ((n as f64 * TRIM_FRACTION).ceil() as usize)
        .max(MIN_TRIM)
        .min(n.saturating_sub(4));
    for trim in (1..=max_trim).rev() {
        let rest = fit_from(n, trim, spread, &v);
        if v(trim - 1) - rest.start > OUTLIER_SCALES * rest.scale {
            return rest;
        }
    }
    fit_from(n, 0, spread, &v)
}

/// The tail fitted to the `k` blocks after the `trim` most extreme.
fn fit_from(n: usize, trim: usize, spread: f64, v: &impl Fn(usize) -> f64) -> Tail {
    let k = ((n as f64 * TAIL_FRACTION).round() as usize).clamp(3, n - 1 - trim);
    let start = v(trim + k);
    let mean_excess = (trim..trim + k).map(|i| v(i) - start).sum::<f64>() / k as f64;
    Tail {
        start,
        scale: mean_excess
            .max(MIN_TAIL_SCALE * spread)
            .max(f64::MIN_POSITIVE),
        k: k as u32,
    }
}

/// Probability that a block reaches oriented value `x`, of which `beyond` of `n` blocks did.
fn tail_p(x: f64, beyond: usize, n: usize, tail: Tail) -> f64 {
    let n1 = n as f64 + 1.0;
    let p = if x <= tail.start {
        (beyond as f64 + 1.0) / n1
    } else {
        let shape = 2.0 * f64::from(tail.k);
        f64::from(tail.k) / n1 * (1.0 + (x - tail.start) / (shape * tail.scale)).powf(-shape)
    };
    p.clamp(MIN_P, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn ordinary_values_are_not_surprising_and_new_extremes_are() {
        let mut h = ExtremeHistory::new(2560); // blocks of 10
        let mut rng = StdRng::seed_from_u64(1);
        let d = Normal::new(50.0, 2.0).unwrap();
        for _ in 0..5_000 {
            h.push(d.sample(&mut rng));
        }
        assert_eq!(h.blocks(), BLOCKS);
        assert_eq!(h.surprise(50.0).0, 0.0);
        let (s, up) = h.surprise(53.0);
        assert!(up && s < 0.5, "{s}");
        let (s, up) = h.surprise(80.0);
        assert!(up && s > 6.0, "{s}");
        let (s, up) = h.surprise(20.0);
        assert!(!up && s > 6.0, "{s}");
        // Surprise grows with distance and is capped.
        assert!(h.surprise(60.0).0 < h.surprise(62.0).0);
        assert_eq!(h.surprise(1e12).0, MAX_SURPRISE);
        assert_eq!(h.surprise(f64::NAN).0, 0.0);
    }

    #[test]
    fn a_large_offset_keeps_its_resolution() {
        let mut h = ExtremeHistory::new(2560);
        let mut rng = StdRng::seed_from_u64(5);
        let d = Normal::new(1e9, 0.01).unwrap();
        for _ in 0..5_000 {
            h.push(d.sample(&mut rng));
        }
        assert_eq!(h.surprise(1e9).0, 0.0);
        assert!(h.surprise(1e9 + 0.2).0 > 6.0);
        assert!(h.surprise(1e9 - 0.2).0 > 6.0);
    }

    #[test]
    fn memory_is_bounded_and_old_blocks_leave() {
        let mut h = ExtremeHistory::new(BLOCKS); // blocks of 1
        for i in 0..10 * BLOCKS {
            h.push(if i < BLOCKS { 1000.0 } else { (i % 7) as f64 });
        }
        assert_eq!(h.hi.len(), BLOCKS);
        assert_eq!(h.lo_seq.len(), BLOCKS);
        assert!(h.hi.windows(2).all(|w| w[0] <= w[1]));
        assert!(h.lo.windows(2).all(|w| w[0] <= w[1]));
        // The early 1000s have left the window: 1000 is now far beyond anything seen.
        assert!(h.surprise(1000.0).0 >= 6.0);
    }

    #[test]
    fn serde_roundtrip_continues_identically() {
        let mut a = ExtremeHistory::new(512);
        for i in 0..3_000 {
            a.push(((i * 37) % 101) as f64);
        }
        let mut b: ExtremeHistory =
            postcard::from_bytes(&postcard::to_stdvec(&a).unwrap()).unwrap();
        assert_eq!(a, b);
        // Persisted: 8 bytes per block and a few fields.
        assert!(postcard::to_stdvec(&a).unwrap().len() < BLOCKS * 8 + 64);
        for i in 0..1_000 {
            let x = ((i * 53) % 97) as f64 * 1.5;
            assert_eq!(a.surprise(x), b.surprise(x));
            a.push(x);
            b.push(x);
        }
        assert_eq!(a, b);
    }
}

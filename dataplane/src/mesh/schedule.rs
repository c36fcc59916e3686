//! Weighted round-robin and random picks, and least-request by two random choices.
//!
//! A [`Schedule`] is a precomputed sequence of endpoint indices in which each endpoint appears
//! in proportion to its weight, spread out the way nginx's smooth weighted round-robin spreads
//! them (weights 5, 1, 1 give `a a b a c a a`, not `a a a a a b c`). Round-robin walks it with a
//! per-worker cursor; random indexes it with a random number. Both are O(1) per pick whatever
//! the number of endpoints.

/// Longest sequence weir builds, entries: weights are scaled down (keeping their ratios to
/// within 1/4096) when their sum is larger.
pub const MAX_SCHEDULE_LEN: u32 = 4096;

/// A weighted sequence of endpoint indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    seq: Box<[u16]>,
}

impl Schedule {
    /// The sequence for `weights` (index = endpoint). `None` when no weight is above zero or
    /// there are more than 65535 endpoints.
    pub fn build(weights: &[u32]) -> Option<Schedule> {
        if weights.len() > usize::from(u16::MAX) {
            return None;
        }
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return None;
        }
        // Scale to at most MAX_SCHEDULE_LEN entries; a positive weight keeps at least one.
        let scaled: Vec<u64> = if total > u64::from(MAX_SCHEDULE_LEN) {
            weights
                .iter()
                .map(|&w| {
                    if w == 0 {
                        0
                    } else {
                        (u64::from(w) * u64::from(MAX_SCHEDULE_LEN) / total).max(1)
                    }
                })
                .collect()
        } else {
            let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
            weights.iter().map(|&w| u64::from(w) / g.max(1)).collect()
        };
        let len: u64 = scaled.iter().sum();
        // Smooth weighted round-robin: each step every endpoint gains its weight, the richest
        // is picked and pays the total.
        let mut current = vec![0i64; scaled.len()];
        let total = i64::try_from(len).unwrap_or(i64::MAX);
        let mut seq = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        for _ in 0..len {
            let mut best = 0usize;
            for (i, &w) in scaled.iter().enumerate() {
                current[i] += i64::try_from(w).unwrap_or(i64::MAX);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            seq.push(u16::try_from(best).unwrap_or(u16::MAX));
        }
        Some(Schedule { seq: seq.into_boxed_slice() })
    }

    /// The endpoint at `cursor` (any value; it wraps).
    #[inline]
    pub fn at(&self, cursor: u32) -> u16 {
        let len = u32::try_from(self.seq.len()).unwrap_or(u32::MAX).max(1);
        self.seq[usize::try_from(cursor % len).unwrap_or(0)]
    }

    /// Sequence length, entries.
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    /// Whether the sequence is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A small, fast pseudo-random generator (xorshift64*), one per worker: picks need spread, not
/// secrecy.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(super::mix64(seed) | 1)
    }

    /// The next 32 random bits.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        u32::try_from(x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32).unwrap_or(0)
    }
}

/// Least-request by the power of two choices (Mitzenmacher): two endpoints drawn from the
/// weighted schedule, the one with fewer active flows wins (the first on a tie).
#[inline]
pub fn two_choices(schedule: &Schedule, rng: &mut Rng, active: impl Fn(u16) -> u32) -> u16 {
    let a = schedule.at(rng.next_u32());
    let b = schedule.at(rng.next_u32());
    if active(b) < active(a) {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(s: &Schedule, n: usize, picks: impl Iterator<Item = u16>) -> Vec<u32> {
        let _ = s;
        let mut c = vec![0u32; n];
        for p in picks {
            c[usize::from(p)] += 1;
        }
        c
    }

    #[test]
    fn smooth_sequence_for_small_weights() {
        let s = Schedule::build(&[5, 1, 1]).unwrap();
        let seq: Vec<u16> = (0..7).map(|i| s.at(i)).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
        let s = Schedule::build(&[2, 4]).unwrap();
        assert_eq!(s.len(), 3, "weights reduced by their gcd");
    }

    #[test]
    fn round_robin_follows_weights_exactly_per_cycle() {
        let s = Schedule::build(&[95, 5]).unwrap();
        let c = counts(&s, 2, (0..100_000u32).map(|i| s.at(i)));
        assert_eq!(c, [95_000, 5_000]);
    }

    #[test]
    fn random_follows_weights_within_a_point() {
        let s = Schedule::build(&[95, 5]).unwrap();
        let mut r = Rng::new(7);
        let c = counts(&s, 2, (0..100_000).map(|_| s.at(r.next_u32())));
        let share = f64::from(c[1]) / 100_000.0;
        assert!((share - 0.05).abs() < 0.01, "{share}");
    }

    #[test]
    fn large_weights_are_scaled_and_zero_stays_zero() {
        let s = Schedule::build(&[1_000_000, 3_000_000, 0, 1]).unwrap();
        assert!(s.len() <= usize::try_from(MAX_SCHEDULE_LEN).unwrap() + 4);
        let c = counts(&s, 4, (0..u32::try_from(s.len()).unwrap()).map(|i| s.at(i)));
        assert_eq!(c[2], 0);
        assert!(c[3] >= 1, "a positive weight keeps a place");
        assert!((f64::from(c[1]) / f64::from(c[0]) - 3.0).abs() < 0.01);
        assert!(Schedule::build(&[0, 0]).is_none());
        assert!(Schedule::build(&[]).is_none());
    }

    #[test]
    fn two_choices_prefers_the_less_loaded() {
        let s = Schedule::build(&[1, 1, 1, 1]).unwrap();
        let mut r = Rng::new(1);
        let mut active = [0u32; 4];
        for _ in 0..10_000 {
            let p = two_choices(&s, &mut r, |i| active[usize::from(i)]);
            active[usize::from(p)] += 1;
        }
        let (lo, hi) = (active.iter().min().unwrap(), active.iter().max().unwrap());
        // Two choices keep the spread tight (one choice would leave ~100 between extremes).
        assert!(hi - lo <= 4, "{active:?}");
    }
}

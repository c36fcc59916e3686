//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4), weighted.
//!
//! Each endpoint has a permutation of the table's slots derived from its identity (address and
//! port, not its position in a list), and endpoints take turns claiming their next free slot
//! until the table is full. A flow goes to `table[hash % M]`. Because the permutations depend
//! only on identities, adding or removing one endpoint of N moves about 1/N of the slots.
//!
//! Weights: in every round each endpoint earns `weight / max_weight` turns and claims a slot per
//! whole turn earned, so slot shares follow the weights to within a slot or two of M. Endpoints
//! of weight 0 take no slots.

use super::{hash_bytes, mix64};

/// Seeds of the two permutation hashes (offset and skip).
const SEED_OFFSET: u64 = 0x6d61_676c_6576_3031;
const SEED_SKIP: u64 = 0x6d61_676c_6576_3032;

/// Largest table size weir builds, slots.
pub const MAX_TABLE_SIZE: u32 = 1 << 20;

/// An endpoint as Maglev sees it: a stable identity and a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevEndpoint<'a> {
    /// Bytes that identify the endpoint across reconfigurations (address and port).
    pub identity: &'a [u8],
    /// Relative weight; 0 takes no slots.
    pub weight: u32,
}

/// A populated lookup table: slot → endpoint index (into the list it was built from).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    slots: Box<[u16]>,
}

/// Why a table could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaglevError {
    /// No endpoint has a weight above zero.
    NoEndpoints,
    /// More endpoints than a table can index (65535).
    TooManyEndpoints,
    /// The table size is not a prime between 2 and [`MAX_TABLE_SIZE`].
    BadSize,
}

impl std::fmt::Display for MaglevError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MaglevError::NoEndpoints => "no endpoint with a weight above zero",
            MaglevError::TooManyEndpoints => "more than 65535 endpoints",
            MaglevError::BadSize => "the Maglev table size must be a prime up to 1048576",
        })
    }
}

impl std::error::Error for MaglevError {}

impl MaglevTable {
    /// Builds a table of `size` slots (a prime, ideally well above 100 × endpoints).
    pub fn build(endpoints: &[MaglevEndpoint<'_>], size: u32) -> Result<MaglevTable, MaglevError> {
        if !(2..=MAX_TABLE_SIZE).contains(&size) || !is_prime(size) {
            return Err(MaglevError::BadSize);
        }
        if endpoints.len() > usize::from(u16::MAX) {
            return Err(MaglevError::TooManyEndpoints);
        }
        let max_weight = endpoints.iter().map(|e| e.weight).max().unwrap_or(0);
        if max_weight == 0 {
            return Err(MaglevError::NoEndpoints);
        }
        let m = u64::from(size);
        // (offset, skip, next) per endpoint: its permutation is offset + j * skip (mod M).
        let mut perm: Vec<(u64, u64, u64)> = endpoints
            .iter()
            .map(|e| {
                let offset = hash_bytes(SEED_OFFSET, e.identity) % m;
                let skip = hash_bytes(SEED_SKIP, e.identity) % (m - 1) + 1;
                (offset, skip, 0)
            })
            .collect();
        let mut credit = vec![0u64; endpoints.len()];
        let mut slots = vec![u16::MAX; usize::try_from(size).map_err(|_| MaglevError::BadSize)?];
        let mut filled = 0u64;
        // Credits in units of 1 / max_weight of a turn.
        let unit = u64::from(max_weight);
        'fill: loop {
            for (i, e) in endpoints.iter().enumerate() {
                credit[i] += u64::from(e.weight);
                while credit[i] >= unit {
                    credit[i] -= unit;
                    let (offset, skip, next) = &mut perm[i];
                    let mut c = (*offset + *next * *skip) % m;
                    // Slot indices are below M, which fits usize (the Vec above has M slots).
                    let at = |c: u64| usize::try_from(c).unwrap_or(0);
                    while slots[at(c)] != u16::MAX {
                        *next += 1;
                        c = (*offset + *next * *skip) % m;
                    }
                    // Cannot truncate: checked against u16::MAX above.
                    slots[at(c)] = u16::try_from(i).unwrap_or(u16::MAX - 1);
                    *next += 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Ok(MaglevTable { slots: slots.into_boxed_slice() })
    }

    /// The endpoint index for a flow hash.
    #[inline]
    pub fn lookup(&self, hash: u64) -> u16 {
        // The table is never empty (size >= 2), and every slot was filled by `build`.
        let i = mix64(hash) % self.slots.len() as u64;
        self.slots[usize::try_from(i).unwrap_or(0)]
    }

    /// Table size, slots.
    pub fn size(&self) -> u32 {
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    /// The slots (for tests and statistics).
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }
}

/// The table size weir uses for `endpoints` endpoints when none is configured: the smallest
/// prime at least 100 times the endpoint count (and at least 1009), so weight shares are exact
/// to a tenth of a percent and a change moves close to 1/N of the flows.
pub fn default_size(endpoints: usize) -> u32 {
    let want = u32::try_from(endpoints.saturating_mul(100)).unwrap_or(MAX_TABLE_SIZE).max(1009);
    next_prime(want.min(MAX_TABLE_SIZE - 1))
}

/// The smallest prime at least `n`.
pub fn next_prime(n: u32) -> u32 {
    let mut p = n.max(2);
    while !is_prime(p) {
        p += 1;
    }
    p
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("198.18.2.{}:80", 10 + i).into_bytes()).collect()
    }

    fn table(ids: &[Vec<u8>], weights: &[u32], size: u32) -> MaglevTable {
        let eps: Vec<MaglevEndpoint> = ids
            .iter()
            .zip(weights)
            .map(|(id, &w)| MaglevEndpoint { identity: id, weight: w })
            .collect();
        MaglevTable::build(&eps, size).unwrap()
    }

    fn shares(t: &MaglevTable, n: usize) -> Vec<f64> {
        let mut c = vec![0u32; n];
        for &s in t.slots() {
            c[usize::from(s)] += 1;
        }
        c.iter().map(|&x| f64::from(x) / f64::from(t.size())).collect()
    }

    #[test]
    fn every_slot_is_filled_and_equal_weights_share_equally() {
        let i = ids(5);
        let t = table(&i, &[1; 5], 65537);
        assert!(t.slots().iter().all(|&s| s < 5));
        for s in shares(&t, 5) {
            assert!((s - 0.2).abs() < 0.001, "{s}");
        }
    }

    #[test]
    fn weights_set_the_shares() {
        let i = ids(2);
        let t = table(&i, &[95, 5], default_size(2));
        let s = shares(&t, 2);
        assert!((s[0] - 0.95).abs() < 0.002 && (s[1] - 0.05).abs() < 0.002, "{s:?}");
        let i = ids(3);
        let t = table(&i, &[1, 2, 0], 10007);
        let s = shares(&t, 3);
        assert!((s[0] - 1.0 / 3.0).abs() < 0.002 && s[2] == 0.0, "{s:?}");
    }

    #[test]
    fn adding_an_endpoint_moves_about_one_in_n() {
        // The default size (100 slots per endpoint) and, for many endpoints, a larger table:
        // churn between old endpoints shrinks as M/N grows (Maglev paper, section 5.3).
        for (n, size) in [(3usize, default_size(4)), (10, default_size(11)), (50, 65537)] {
            let before_ids = ids(n);
            let after_ids = ids(n + 1);
            let before = table(&before_ids, &vec![1; n], size);
            let after = table(&after_ids, &vec![1; n + 1], size);
            let moved = before
                .slots()
                .iter()
                .zip(after.slots())
                .filter(|(b, a)| b != a && usize::from(**a) != n)
                .count();
            let to_new = after.slots().iter().filter(|&&a| usize::from(a) == n).count();
            let m = f64::from(size);
            let fair = 1.0 / (n as f64 + 1.0);
            // The new endpoint takes its fair share; few slots move between old endpoints, so
            // all in all about 1/N of the flows move.
            assert!((to_new as f64 / m - fair).abs() < 0.01, "n={n}");
            let total = (moved + to_new) as f64 / m;
            eprintln!(
                "n={n}: {:.3} moved in all ({:.3} between old endpoints)",
                total,
                moved as f64 / m
            );
            assert!(
                total < fair * 1.4,
                "n={n}: {total:.3} of the flows moved, fair share {fair:.3}"
            );
        }
    }

    #[test]
    fn removing_an_endpoint_only_moves_its_own_slots() {
        let all = ids(10);
        let size = default_size(10);
        let before = table(&all, &[1; 10], size);
        // Endpoint 4 removed: the list shifts, so compare by identity.
        let rest: Vec<Vec<u8>> =
            all.iter().enumerate().filter(|(i, _)| *i != 4).map(|(_, v)| v.clone()).collect();
        let after = table(&rest, &[1; 9], size);
        let name_before = |s: u16| &all[usize::from(s)];
        let name_after = |s: u16| &rest[usize::from(s)];
        let mut kept_moved = 0;
        for (&b, &a) in before.slots().iter().zip(after.slots()) {
            if b != 4 && name_before(b) != name_after(a) {
                kept_moved += 1;
            }
        }
        let share = f64::from(kept_moved) / f64::from(size);
        assert!(share < 0.1 * 0.4, "{share:.3} of the slots of kept endpoints moved");
    }

    #[test]
    fn bad_input_is_an_error() {
        let i = ids(2);
        let eps = [MaglevEndpoint { identity: &i[0], weight: 0 }];
        assert_eq!(MaglevTable::build(&eps, 1009), Err(MaglevError::NoEndpoints));
        let eps = [MaglevEndpoint { identity: &i[0], weight: 1 }];
        assert_eq!(MaglevTable::build(&eps, 1000), Err(MaglevError::BadSize));
        assert_eq!(MaglevTable::build(&eps, 1), Err(MaglevError::BadSize));
    }

    #[test]
    fn sizes_are_primes() {
        assert_eq!(next_prime(1000), 1009);
        assert_eq!(default_size(3), 1009);
        assert_eq!(default_size(100), 10007);
        assert!(is_prime(65537));
    }
}

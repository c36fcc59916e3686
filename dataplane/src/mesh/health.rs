//! Passive health: what the workers see of each endpoint's connections, shared with the
//! control thread, which ejects an endpoint after a run of failures.
//!
//! Workers write: a failed connect (a handshake refused with RST, or never answered) adds one
//! to the endpoint's run of consecutive failures; a good one ends the run (a store only when
//! there was a run, so healthy traffic writes nothing shared). The control thread reads the
//! runs every so often ([`OutlierDetector::check`]): a run of `consecutive_failures` ejects the
//! endpoint for `base_ejection` times its number of ejections so far (at most
//! `max_ejection`), Envoy's outlier detection. Ejected endpoints take no new flows: the control
//! thread rebuilds the mesh snapshot without them, and again when their time is up.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Per-endpoint counters, by stable endpoint id.
pub struct HealthTable {
    run: Box<[AtomicU32]>,
    failures: Box<[AtomicU64]>,
    successes: Box<[AtomicU64]>,
}

impl HealthTable {
    /// Counters for `endpoints` endpoint ids.
    pub fn new(endpoints: usize) -> HealthTable {
        HealthTable {
            run: (0..endpoints).map(|_| AtomicU32::new(0)).collect(),
            failures: (0..endpoints).map(|_| AtomicU64::new(0)).collect(),
            successes: (0..endpoints).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn at<T>(v: &[T], id: u32) -> Option<&T> {
        v.get(usize::try_from(id).ok()?)
    }

    /// A connection to endpoint `id` failed.
    #[inline]
    pub fn failed(&self, id: u32) {
        if let (Some(r), Some(f)) = (Self::at(&self.run, id), Self::at(&self.failures, id)) {
            r.fetch_add(1, Ordering::Relaxed);
            f.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection to endpoint `id` succeeded.
    #[inline]
    pub fn succeeded(&self, id: u32) {
        if let Some(r) = Self::at(&self.run, id) {
            if r.load(Ordering::Relaxed) != 0 {
                r.store(0, Ordering::Relaxed);
            }
        }
        if let Some(s) = Self::at(&self.successes, id) {
            s.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The current run of failures of endpoint `id`.
    pub fn run(&self, id: u32) -> u32 {
        Self::at(&self.run, id).map_or(0, |r| r.load(Ordering::Relaxed))
    }

    /// Failed and successful connects to endpoint `id` so far.
    pub fn totals(&self, id: u32) -> (u64, u64) {
        (
            Self::at(&self.failures, id).map_or(0, |f| f.load(Ordering::Relaxed)),
            Self::at(&self.successes, id).map_or(0, |s| s.load(Ordering::Relaxed)),
        )
    }

    fn reset_run(&self, id: u32) {
        if let Some(r) = Self::at(&self.run, id) {
            r.store(0, Ordering::Relaxed);
        }
    }

    /// Number of endpoint ids.
    pub fn len(&self) -> usize {
        self.run.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.run.is_empty()
    }
}

/// Outlier detection settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierSettings {
    /// Consecutive failed connects that eject an endpoint; 0 turns detection off.
    pub consecutive_failures: u32,
    /// First ejection's length; the n-th lasts n times this.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
}

/// The control thread's view: which endpoints are ejected, until when, and how often they were.
pub struct OutlierDetector {
    settings: OutlierSettings,
    /// Per endpoint id: ejected until (if ejected), and ejections so far.
    state: Vec<(Option<Instant>, u32)>,
}

impl OutlierDetector {
    /// A detector for `endpoints` endpoint ids.
    pub fn new(settings: OutlierSettings, endpoints: usize) -> OutlierDetector {
        OutlierDetector { settings, state: vec![(None, 0); endpoints] }
    }

    /// Looks at the failure runs: ejects endpoints whose run reached the threshold, returns
    /// those whose time is up. Returns whether the set of ejected endpoints changed.
    pub fn check(&mut self, table: &HealthTable, now: Instant) -> bool {
        let mut changed = false;
        for (i, (until, count)) in self.state.iter_mut().enumerate() {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            match until {
                Some(t) if now >= *t => {
                    *until = None;
                    table.reset_run(id);
                    changed = true;
                }
                Some(_) => {}
                None => {
                    let n = self.settings.consecutive_failures;
                    if n > 0 && table.run(id) >= n {
                        *count += 1;
                        let length = self
                            .settings
                            .base_ejection
                            .saturating_mul(*count)
                            .min(self.settings.max_ejection);
                        *until = Some(now + length);
                        table.reset_run(id);
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    /// Whether endpoint `id` is ejected.
    pub fn is_ejected(&self, id: u32) -> bool {
        self.state.get(usize::try_from(id).unwrap_or(usize::MAX)).is_some_and(|s| s.0.is_some())
    }

    /// How often endpoint `id` was ejected.
    pub fn ejections(&self, id: u32) -> u32 {
        self.state.get(usize::try_from(id).unwrap_or(usize::MAX)).map_or(0, |s| s.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_ejects_for_longer_each_time() {
        let t = HealthTable::new(4);
        let s = OutlierSettings {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
        };
        let mut d = OutlierDetector::new(s, 4);
        let t0 = Instant::now();
        t.failed(1);
        t.failed(1);
        t.succeeded(1);
        t.failed(1);
        assert!(!d.check(&t, t0), "a success broke the run");
        t.failed(1);
        t.failed(1);
        assert!(d.check(&t, t0));
        assert!(d.is_ejected(1) && !d.is_ejected(0));
        assert!(!d.check(&t, t0 + Duration::from_secs(9)));
        assert!(d.check(&t, t0 + Duration::from_secs(10)), "back after 10 s");
        assert!(!d.is_ejected(1));
        for _ in 0..3 {
            t.failed(1);
        }
        let t1 = t0 + Duration::from_secs(11);
        assert!(d.check(&t, t1));
        assert!(!d.check(&t, t1 + Duration::from_secs(19)), "the second ejection lasts 20 s");
        assert!(d.check(&t, t1 + Duration::from_secs(20)));
        assert_eq!(d.ejections(1), 2);
        assert_eq!(t.totals(1), (8, 1));
    }

    #[test]
    fn zero_turns_detection_off() {
        let t = HealthTable::new(1);
        let mut d = OutlierDetector::new(
            OutlierSettings {
                consecutive_failures: 0,
                base_ejection: Duration::from_secs(1),
                max_ejection: Duration::from_secs(1),
            },
            1,
        );
        for _ in 0..100 {
            t.failed(0);
        }
        assert!(!d.check(&t, Instant::now()));
    }
}

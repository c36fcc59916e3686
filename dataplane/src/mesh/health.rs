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

    /// Sets endpoint `id`'s counters (a hot restart goes on from its predecessor's).
    pub fn restore(&self, id: u32, run: u32, (failures, successes): (u64, u64)) {
        if let Some(r) = Self::at(&self.run, id) {
            r.store(run, Ordering::Relaxed);
        }
        if let Some(f) = Self::at(&self.failures, id) {
            f.store(failures, Ordering::Relaxed);
        }
        if let Some(s) = Self::at(&self.successes, id) {
            s.store(successes, Ordering::Relaxed);
        }
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
    /// The most of a cluster's endpoints, in percent, that may be ejected at once (Envoy's
    /// `max_ejection_percent`, 10 by default); one always may, in a cluster of two or more.
    pub max_ejection_percent: u32,
}

impl OutlierSettings {
    /// How many of a cluster of `members` endpoints may be ejected at once.
    pub fn ejectable(&self, members: usize) -> usize {
        let share = members.saturating_mul(self.max_ejection_percent as usize) / 100;
        if members >= 2 && self.max_ejection_percent > 0 {
            share.max(1)
        } else {
            share.min(members.saturating_sub(1))
        }
    }
}

/// The control thread's view: which endpoints are ejected, until when, and how often they were.
pub struct OutlierDetector {
    settings: OutlierSettings,
    /// Per endpoint id: its settings (its cluster's, else `settings`).
    per_endpoint: Vec<OutlierSettings>,
    /// Per endpoint id: ejected until (if ejected), and ejections so far.
    state: Vec<(Option<Instant>, u32)>,
    /// Ejections held back because their cluster had as many ejected as it may.
    pub held_back: u64,
}

impl OutlierDetector {
    /// A detector for `endpoints` endpoint ids.
    pub fn new(settings: OutlierSettings, endpoints: usize) -> OutlierDetector {
        OutlierDetector {
            settings,
            per_endpoint: vec![settings; endpoints],
            state: vec![(None, 0); endpoints],
            held_back: 0,
        }
    }

    /// Sets the settings of these endpoints (their clusters'); all others take the defaults
    /// given at creation.
    pub fn configure(&mut self, settings: impl IntoIterator<Item = (u32, OutlierSettings)>) {
        self.per_endpoint.fill(self.settings);
        self.configure_some(settings);
    }

    /// Sets these endpoints' settings; the others keep theirs.
    pub fn configure_some(&mut self, settings: impl IntoIterator<Item = (u32, OutlierSettings)>) {
        for (id, s) in settings {
            if let Some(slot) = self.per_endpoint.get_mut(usize::try_from(id).unwrap_or(usize::MAX))
            {
                *slot = s;
            }
        }
    }

    /// Looks at the failure runs: ejects endpoints whose run reached the threshold, returns
    /// those whose time is up. `clusters` gives the member ids of every cluster: an endpoint
    /// is ejected only if no cluster it is in would then have more ejected than
    /// [`OutlierSettings::ejectable`] (its run then starts again). Returns whether the set of
    /// ejected endpoints changed.
    pub fn check<C>(&mut self, table: &HealthTable, now: Instant, clusters: C) -> bool
    where
        C: Fn() -> Vec<Vec<u32>>,
    {
        let mut changed = false;
        let mut members: Option<Vec<Vec<u32>>> = None;
        for i in 0..self.state.len() {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            let (until, _) = self.state[i];
            match until {
                Some(t) if now >= t => {
                    self.state[i].0 = None;
                    table.reset_run(id);
                    changed = true;
                }
                Some(_) => {}
                None => {
                    let settings = self.per_endpoint[i];
                    let n = settings.consecutive_failures;
                    if n > 0 && table.run(id) >= n {
                        let members = members.get_or_insert_with(&clusters);
                        let room = members.iter().filter(|m| m.contains(&id)).all(|m| {
                            let ejected = m.iter().filter(|&&e| self.is_ejected(e)).count();
                            ejected < settings.ejectable(m.len())
                        });
                        if !room {
                            self.held_back += 1;
                            table.reset_run(id);
                            continue;
                        }
                        let (until, count) = &mut self.state[i];
                        *count += 1;
                        let length = settings
                            .base_ejection
                            .saturating_mul(*count)
                            .min(settings.max_ejection);
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

    /// When endpoint `id`'s ejection ends, if it is ejected.
    pub fn ejected_until(&self, id: u32) -> Option<Instant> {
        self.state.get(usize::try_from(id).ok()?)?.0
    }

    /// How many times endpoint `id` was ejected.
    pub fn ejections(&self, id: u32) -> u32 {
        self.state.get(usize::try_from(id).unwrap_or(usize::MAX)).map_or(0, |s| s.1)
    }

    /// Sets endpoint `id`'s state as a predecessor left it: ejected for `left` more (if
    /// ejected; at most its longest ejection), after `ejections` ejections. Returns whether
    /// `id` is an endpoint id here.
    pub fn restore(
        &mut self,
        id: u32,
        left: Option<Duration>,
        ejections: u32,
        now: Instant,
    ) -> bool {
        let i = usize::try_from(id).unwrap_or(usize::MAX);
        let (Some(s), Some(settings)) = (self.state.get_mut(i), self.per_endpoint.get(i)) else {
            return false;
        };
        let until = left.and_then(|l| now.checked_add(l.min(settings.max_ejection)));
        *s = (until, ejections);
        true
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
            max_ejection_percent: 100,
        };
        let mut d = OutlierDetector::new(s, 4);
        let t0 = Instant::now();
        t.failed(1);
        t.failed(1);
        t.succeeded(1);
        t.failed(1);
        assert!(!d.check(&t, t0, Vec::new), "a success broke the run");
        t.failed(1);
        t.failed(1);
        assert!(d.check(&t, t0, Vec::new));
        assert!(d.is_ejected(1) && !d.is_ejected(0));
        assert!(!d.check(&t, t0 + Duration::from_secs(9), Vec::new));
        assert!(d.check(&t, t0 + Duration::from_secs(10), Vec::new), "back after 10 s");
        assert!(!d.is_ejected(1));
        for _ in 0..3 {
            t.failed(1);
        }
        let t1 = t0 + Duration::from_secs(11);
        assert!(d.check(&t, t1, Vec::new));
        assert!(
            !d.check(&t, t1 + Duration::from_secs(19), Vec::new),
            "the second ejection lasts 20 s"
        );
        assert!(d.check(&t, t1 + Duration::from_secs(20), Vec::new));
        assert_eq!(d.ejections(1), 2);
        assert_eq!(t.totals(1), (8, 1));
    }

    #[test]
    fn an_endpoint_follows_its_clusters_settings() {
        let t = HealthTable::new(3);
        let s = |n| OutlierSettings {
            consecutive_failures: n,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(1),
            max_ejection_percent: 100,
        };
        let mut d = OutlierDetector::new(s(3), 3);
        d.configure([(1, s(1)), (2, s(0))]);
        for id in 0..3 {
            t.failed(id);
        }
        assert!(d.check(&t, Instant::now(), Vec::new));
        assert!(!d.is_ejected(0), "the default: 3 in a row");
        assert!(d.is_ejected(1), "its cluster's: 1");
        for _ in 0..10 {
            t.failed(2);
        }
        d.check(&t, Instant::now(), Vec::new);
        assert!(!d.is_ejected(2), "its cluster turned detection off");
    }

    #[test]
    fn a_restored_ejection_runs_for_what_was_left_and_counts_on() {
        let s = OutlierSettings {
            consecutive_failures: 1,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(100),
            max_ejection_percent: 100,
        };
        let t = HealthTable::new(2);
        let mut d = OutlierDetector::new(s, 2);
        let t0 = Instant::now();
        assert!(d.restore(1, Some(Duration::from_secs(3)), 2, t0));
        assert!(!d.restore(2, None, 1, t0), "no such endpoint id");
        // What a predecessor says is held to the longest ejection: no overflow, no panic.
        assert!(d.restore(0, Some(Duration::MAX), 1, t0));
        assert_eq!(d.ejected_until(0), Some(t0 + Duration::from_secs(100)));
        assert!(d.restore(0, None, 0, t0));
        t.restore(0, 5, (7, 9));
        assert_eq!((t.run(0), t.totals(0)), (5, (7, 9)));
        assert!(d.is_ejected(1));
        // Endpoint 0's run of failures went on from its predecessor's: it reached the
        // threshold.
        assert!(d.check(&t, t0 + Duration::from_secs(2), Vec::new));
        assert!(d.is_ejected(0));
        assert!(d.is_ejected(1), "3 s were left");
        d.check(&t, t0 + Duration::from_secs(3), Vec::new);
        assert!(!d.is_ejected(1));
        // The next ejection is the third: 30 s.
        t.failed(1);
        let t1 = t0 + Duration::from_secs(4);
        assert!(d.check(&t, t1, Vec::new));
        assert_eq!(d.ejections(1), 3);
        assert_eq!(d.ejected_until(1), Some(t1 + Duration::from_secs(30)));
    }

    #[test]
    fn zero_turns_detection_off() {
        let t = HealthTable::new(1);
        let mut d = OutlierDetector::new(
            OutlierSettings {
                consecutive_failures: 0,
                base_ejection: Duration::from_secs(1),
                max_ejection: Duration::from_secs(1),
                max_ejection_percent: 100,
            },
            1,
        );
        for _ in 0..100 {
            t.failed(0);
        }
        assert!(!d.check(&t, Instant::now(), Vec::new));
    }

    #[test]
    fn ejection_stops_at_the_clusters_share() {
        let s = |pct| OutlierSettings {
            consecutive_failures: 1,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(10),
            max_ejection_percent: pct,
        };
        assert_eq!(s(10).ejectable(1), 0, "never the only endpoint");
        assert_eq!(s(10).ejectable(3), 1, "one of a small cluster");
        assert_eq!(s(10).ejectable(30), 3);
        assert_eq!(s(0).ejectable(30), 0);
        assert_eq!(s(100).ejectable(4), 4);
        // Three endpoints, all failing: one is ejected, the others held back.
        let t = HealthTable::new(3);
        let mut d = OutlierDetector::new(s(10), 3);
        for id in 0..3 {
            t.failed(id);
        }
        assert!(d.check(&t, Instant::now(), || vec![vec![0, 1, 2]]));
        let ejected: Vec<u32> = (0..3).filter(|&i| d.is_ejected(i)).collect();
        assert_eq!(ejected.len(), 1, "{ejected:?}");
        assert_eq!(d.held_back, 2);
        // An endpoint in a second cluster that has room is still held back by the first.
        let held = (0..3).find(|&i| !d.is_ejected(i)).unwrap();
        t.failed(held);
        assert!(!d.check(&t, Instant::now(), || vec![vec![0, 1, 2], vec![held]]));
    }
}

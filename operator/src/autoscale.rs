//! The lag-based autoscaler: a pure function of the lag history and the spec.
//!
//! desired = ceil(total lag / lagPerReplica), clamped to [minReplicas, min(maxReplicas,
//! partitions)]. At minReplicas the table stays there until the lag exceeds activationLag.
//! Scaling up is immediate; scaling down takes the highest recommendation of the
//! stabilization window, and only once the history covers the whole window, so a dip in lag
//! does not flap the pods (the same rule as the HorizontalPodAutoscaler's).

use std::collections::VecDeque;

/// The scaling settings of one table (from `spec.scaling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub lag_per_replica: i64,
    pub activation_lag: i64,
    pub stabilization_ms: i64,
}

/// One observation of the table's total lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: i64,
    pub lag: i64,
}

/// The lag observations of one table, oldest first, trimmed to what the window needs.
#[derive(Debug, Clone, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Records an observation and forgets those no window needs any more (keeping the newest
    /// one older than the window, which proves the window is covered).
    pub fn record(&mut self, sample: Sample, window_ms: i64) {
        self.samples.push_back(sample);
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|s| sample.at_ms - s.at_ms >= window_ms)
        {
            self.samples.pop_front();
        }
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }
}

/// A replica count and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub replicas: i32,
    pub reason: String,
}

/// The replica range: [minReplicas, min(maxReplicas, partitions)].
pub fn bounds(policy: &Policy, partitions: Option<i32>) -> (i32, i32) {
    let upper = partitions.map_or(policy.max_replicas, |p| policy.max_replicas.min(p.max(1)));
    (policy.min_replicas.min(upper), upper)
}

/// The replicas one lag value calls for.
pub fn recommend(policy: &Policy, partitions: Option<i32>, current: i32, lag: i64) -> i32 {
    let (lower, upper) = bounds(policy, partitions);
    if current <= lower && lag <= policy.activation_lag {
        return lower;
    }
    let per = policy.lag_per_replica.max(1);
    let wanted = (lag.max(0) + per - 1) / per;
    let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
    // Above the activation lag a table at zero gets at least one pod.
    let floor = if lag > policy.activation_lag {
        lower.max(1).min(upper)
    } else {
        lower
    };
    wanted.clamp(floor, upper)
}

/// The replica count for `current` pods given the lag `history` (newest last) at `now_ms`.
pub fn decide(
    policy: &Policy,
    partitions: Option<i32>,
    current: i32,
    history: &History,
    now_ms: i64,
) -> Decision {
    let (lower, upper) = bounds(policy, partitions);
    let Some(latest) = history.samples().last().copied() else {
        return Decision {
            replicas: current.clamp(lower, upper),
            reason: "no lag observed yet".into(),
        };
    };
    let now = recommend(policy, partitions, current, latest.lag);
    if now > current {
        return Decision {
            replicas: now,
            reason: format!(
                "lag {} calls for {now} (lagPerReplica {})",
                latest.lag, policy.lag_per_replica
            ),
        };
    }
    if current > upper {
        return Decision {
            replicas: upper,
            reason: format!("at most {upper} (maxReplicas or the partition count)"),
        };
    }
    if now == current {
        return Decision {
            replicas: current,
            reason: format!("lag {} is on target", latest.lag),
        };
    }
    // Scaling down: the highest recommendation within the window, once the window is covered.
    let window_start = now_ms - policy.stabilization_ms;
    let covered = history
        .samples()
        .next()
        .is_some_and(|s| s.at_ms <= window_start);
    if !covered {
        return Decision {
            replicas: current,
            reason: format!(
                "lag {} calls for {now}; waiting out the stabilization window",
                latest.lag
            ),
        };
    }
    let highest = history
        .samples()
        .filter(|s| s.at_ms >= window_start)
        .map(|s| recommend(policy, partitions, current, s.lag))
        .max()
        .unwrap_or(now)
        .max(now);
    Decision {
        replicas: highest.min(current),
        reason: format!(
            "lag stayed at or below what {highest} replicas handle for the stabilization window"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        min_replicas: 1,
        max_replicas: 10,
        lag_per_replica: 1000,
        activation_lag: 0,
        stabilization_ms: 60_000,
    };

    fn history(samples: &[(i64, i64)]) -> History {
        let mut h = History::default();
        for &(at_ms, lag) in samples {
            h.record(Sample { at_ms, lag }, POLICY.stabilization_ms);
        }
        h
    }

    #[test]
    fn scales_up_at_once_to_ceil_of_lag_over_target() {
        let h = history(&[(0, 3001)]);
        assert_eq!(decide(&POLICY, Some(12), 1, &h, 0).replicas, 4);
    }

    #[test]
    fn never_beyond_max_replicas_or_partitions() {
        let h = history(&[(0, 1_000_000)]);
        assert_eq!(decide(&POLICY, Some(6), 1, &h, 0).replicas, 6);
        assert_eq!(decide(&POLICY, Some(64), 1, &h, 0).replicas, 10);
        // A topic that lost partitions (or a lower maxReplicas) brings pods down at once.
        assert_eq!(
            decide(&POLICY, Some(3), 8, &history(&[(0, 0)]), 0).replicas,
            3
        );
    }

    #[test]
    fn never_below_min_replicas() {
        let h = history(&[(0, 0)]);
        let policy = Policy {
            min_replicas: 2,
            ..POLICY
        };
        assert_eq!(decide(&policy, Some(12), 1, &h, 0).replicas, 2);
    }

    #[test]
    fn scales_down_only_after_the_window() {
        // Lag fell to zero at t=10s; the window is 60 s.
        let h = history(&[(0, 5000), (10_000, 0), (30_000, 0)]);
        assert_eq!(decide(&POLICY, Some(12), 5, &h, 30_000).replicas, 5);
        let h = history(&[(0, 5000), (10_000, 0), (30_000, 0), (75_000, 0)]);
        assert_eq!(decide(&POLICY, Some(12), 5, &h, 75_000).replicas, 1);
    }

    #[test]
    fn a_short_spike_inside_the_window_holds_the_pods() {
        let h = history(&[(0, 0), (30_000, 4000), (40_000, 0), (70_000, 0)]);
        // At 70 s the window [10 s, 70 s] still holds the spike.
        assert_eq!(decide(&POLICY, Some(12), 4, &h, 70_000).replicas, 4);
        let h = history(&[
            (0, 0),
            (30_000, 4000),
            (40_000, 0),
            (70_000, 0),
            (95_000, 0),
        ]);
        assert_eq!(decide(&POLICY, Some(12), 4, &h, 95_000).replicas, 1);
    }

    #[test]
    fn no_flapping_around_the_target() {
        // Lag oscillating between 1.5 and 2.5 replicas' worth: up to 3 once, then it stays.
        let mut h = History::default();
        let mut replicas = 2;
        let mut changes = 0;
        for i in 0..40 {
            let lag = if i % 2 == 0 { 1500 } else { 2500 };
            h.record(
                Sample {
                    at_ms: i * 5000,
                    lag,
                },
                POLICY.stabilization_ms,
            );
            let d = decide(&POLICY, Some(12), replicas, &h, i * 5000);
            if d.replicas != replicas {
                changes += 1;
                replicas = d.replicas;
            }
        }
        assert_eq!((replicas, changes), (3, 1));
    }

    #[test]
    fn activation_lag_keeps_an_idle_table_at_zero() {
        let policy = Policy {
            min_replicas: 0,
            activation_lag: 500,
            ..POLICY
        };
        assert_eq!(
            decide(&policy, Some(12), 0, &history(&[(0, 400)]), 0).replicas,
            0
        );
        assert_eq!(
            decide(&policy, Some(12), 0, &history(&[(0, 600)]), 0).replicas,
            1
        );
        // Once running, a small lag keeps one pod until the window says otherwise.
        assert_eq!(
            decide(&policy, Some(12), 1, &history(&[(0, 400)]), 0).replicas,
            1
        );
    }

    #[test]
    fn history_keeps_only_what_the_window_needs() {
        let h = history(&[(0, 1), (10_000, 2), (70_000, 3), (80_000, 4), (200_000, 5)]);
        let kept: Vec<i64> = h.samples().map(|s| s.at_ms).collect();
        assert_eq!(kept, vec![80_000, 200_000]);
    }
}

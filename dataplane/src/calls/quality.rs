//! Call quality: validate a report, find its issues against thresholds, and summarize
//! many reports (mean and p95 of each measure). Pure; the store keeps the samples.

use serde::{Deserialize, Serialize};

use super::Sample;

/// Limits past which a report has an issue.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct Thresholds {
    pub max_latency_ms: f64,
    pub max_packet_loss_percentage: f64,
    pub max_jitter_ms: f64,
    pub min_bitrate_kbps: f64,
}

/// Largest plausible values; anything above is a client bug, refused.
pub const MAX_LATENCY_MS: f64 = 60_000.0;
pub const MAX_JITTER_MS: f64 = 60_000.0;
pub const MAX_BITRATE_KBPS: f64 = 1_000_000.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Issue {
    HighLatency,
    PacketLoss,
    HighJitter,
    LowBitrate,
}

impl Issue {
    /// The wire name (also the `kind` label of `switchboard_call_quality_issues_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Issue::HighLatency => "high_latency",
            Issue::PacketLoss => "packet_loss",
            Issue::HighJitter => "high_jitter",
            Issue::LowBitrate => "low_bitrate",
        }
    }
}

/// Check ranges; the message names the field.
pub fn validate(s: &Sample) -> Result<(), String> {
    let check = |name: &str, v: f64, max: f64| {
        if v.is_finite() && (0.0..=max).contains(&v) {
            Ok(())
        } else {
            Err(format!("{name} must be a number from 0 to {max}"))
        }
    };
    check("latency_ms", s.latency_ms, MAX_LATENCY_MS)?;
    check("packet_loss_percentage", s.packet_loss_percentage, 100.0)?;
    check("jitter_ms", s.jitter_ms, MAX_JITTER_MS)?;
    check("bitrate_kbps", s.bitrate_kbps, MAX_BITRATE_KBPS)
}

/// The issues of one report.
pub fn issues(s: &Sample, t: &Thresholds) -> Vec<Issue> {
    let mut out = Vec::new();
    if s.latency_ms > t.max_latency_ms {
        out.push(Issue::HighLatency);
    }
    if s.packet_loss_percentage > t.max_packet_loss_percentage {
        out.push(Issue::PacketLoss);
    }
    if s.jitter_ms > t.max_jitter_ms {
        out.push(Issue::HighJitter);
    }
    if s.bitrate_kbps < t.min_bitrate_kbps {
        out.push(Issue::LowBitrate);
    }
    out
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Stat {
    pub mean: f64,
    pub p95: f64,
}

/// Count of reports that showed each issue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IssueCounts {
    pub high_latency: u64,
    pub packet_loss: u64,
    pub high_jitter: u64,
    pub low_bitrate: u64,
}

/// Mean and p95 of every measure over a set of reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    pub reports: u64,
    pub latency_ms: Stat,
    pub packet_loss_percentage: Stat,
    pub jitter_ms: Stat,
    pub bitrate_kbps: Stat,
    pub issues: IssueCounts,
}

/// Mean and nearest-rank p95 of `v` (zeros when empty).
pub fn stat(mut v: Vec<f64>) -> Stat {
    if v.is_empty() {
        return Stat::default();
    }
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    // Nearest rank: the smallest value with at least 95% of the values at or below it.
    let rank = ((0.95 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Stat {
        mean,
        p95: v[rank - 1],
    }
}

pub fn summarize(samples: &[Sample], t: &Thresholds) -> Summary {
    let col = |f: fn(&Sample) -> f64| stat(samples.iter().map(f).collect());
    let mut issues_ = IssueCounts::default();
    for s in samples {
        for i in issues(s, t) {
            match i {
                Issue::HighLatency => issues_.high_latency += 1,
                Issue::PacketLoss => issues_.packet_loss += 1,
                Issue::HighJitter => issues_.high_jitter += 1,
                Issue::LowBitrate => issues_.low_bitrate += 1,
            }
        }
    }
    Summary {
        reports: samples.len() as u64,
        latency_ms: col(|s| s.latency_ms),
        packet_loss_percentage: col(|s| s.packet_loss_percentage),
        jitter_ms: col(|s| s.jitter_ms),
        bitrate_kbps: col(|s| s.bitrate_kbps),
        issues: issues_,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        max_latency_ms: 300.0,
        max_packet_loss_percentage: 5.0,
        max_jitter_ms: 50.0,
        min_bitrate_kbps: 100.0,
    };

    fn mk_sample(latency_ms: f64, loss: f64, jitter_ms: f64, kbps: f64) -> Sample {
        Sample {
            latency_ms,
            packet_loss_percentage: loss,
            jitter_ms,
            bitrate_kbps: kbps,
        }
    }

    #[test]
    fn issue_labels_are_the_wire_names() {
        for i in [
            Issue::HighLatency,
            Issue::PacketLoss,
            Issue::HighJitter,
            Issue::LowBitrate,
        ] {
            assert_eq!(
                serde_json::to_value(i).unwrap(),
                serde_json::Value::from(i.as_str())
            );
        }
    }

    #[test]
    fn each_threshold_raises_its_issue() {
        assert!(issues(&mk_sample(300.0, 5.0, 50.0, 100.0), &T).is_empty());
        assert_eq!(
            issues(&mk_sample(301.0, 5.1, 51.0, 99.0), &T),
            vec![
                Issue::HighLatency,
                Issue::PacketLoss,
                Issue::HighJitter,
                Issue::LowBitrate
            ]
        );
    }

    #[test]
    fn out_of_range_reports_are_refused_by_field() {
        assert!(validate(&mk_sample(10.0, 0.0, 1.0, 500.0)).is_ok());
        assert!(
            validate(&mk_sample(-1.0, 0.0, 1.0, 5.0))
                .unwrap_err()
                .starts_with("latency_ms")
        );
        assert!(
            validate(&mk_sample(1.0, 101.0, 1.0, 5.0))
                .unwrap_err()
                .starts_with("packet_loss")
        );
        assert!(
            validate(&mk_sample(1.0, 1.0, f64::NAN, 5.0))
                .unwrap_err()
                .starts_with("jitter_ms")
        );
        assert!(
            validate(&mk_sample(1.0, 1.0, 1.0, f64::INFINITY))
                .unwrap_err()
                .starts_with("bitrate")
        );
    }

    #[test]
    fn mean_and_nearest_rank_p95() {
        let s = stat((1..=100).map(f64::from).collect());
        assert_eq!(s.mean, 50.5);
        assert_eq!(s.p95, 95.0);
        assert_eq!(stat(vec![7.0]).p95, 7.0);
        assert_eq!(stat(vec![]), Stat::default());
        let sum = summarize(
            &[
                mk_sample(100.0, 0.0, 1.0, 500.0),
                mk_sample(500.0, 9.0, 1.0, 500.0),
            ],
            &T,
        );
        assert_eq!(sum.reports, 2);
        assert_eq!(
            sum.latency_ms,
            Stat {
                mean: 300.0,
                p95: 500.0
            }
        );
        assert_eq!(sum.issues.high_latency, 1);
        assert_eq!(sum.issues.packet_loss, 1);
    }
}

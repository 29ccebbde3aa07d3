//! The worker's consumer lag per partition, from librdkafka's statistics: every
//! [`STATS_INTERVAL`] librdkafka hands the consumer context its figures, and
//! [`LagContext`] turns those of the partitions this worker consumes into
//! `switchboard_worker_kafka_consumer_lag{topic, partition}` (messages between the
//! partition's high watermark and the group's committed offset). No request of its own
//! goes to the brokers.

use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::statistics::Statistics;

use crate::metrics::{Metrics, PartitionLabel};

/// How often librdkafka reports its statistics (`statistics.interval.ms`).
pub const STATS_INTERVAL: Duration = Duration::from_secs(10);

/// `(topic, partition, lag)` of every partition this consumer is assigned and whose lag
/// librdkafka knows (it reports -1 until the group has a committed offset and the
/// partition a high watermark; its internal partition -1 is not a partition).
pub fn partition_lags(stats: &Statistics) -> Vec<(String, i32, i64)> {
    let mut out: Vec<(String, i32, i64)> = stats
        .topics
        .iter()
        .flat_map(|(topic, t)| {
            t.partitions
                .values()
                .filter(|p| p.partition >= 0 && p.desired && p.consumer_lag >= 0)
                .map(move |p| (topic.clone(), p.partition, p.consumer_lag))
        })
        .collect();
    out.sort();
    out
}

/// The worker consumer's context: records the lag at each statistics report.
pub struct LagContext {
    pub metrics: Metrics,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        let family = &self.metrics.kafka_consumer_lag;
        // Partitions revoked since the last report must not keep their last figure.
        family.clear();
        for (topic, partition, lag) in partition_lags(&statistics) {
            family
                .get_or_create(&PartitionLabel {
                    topic,
                    partition: partition.to_string(),
                })
                .set(lag);
        }
    }
}

impl ConsumerContext for LagContext {}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::statistics::{Partition, Topic};

    fn mk_partition(partition: i32, desired: bool, consumer_lag: i64) -> Partition {
        Partition {
            partition,
            desired,
            consumer_lag,
            ..Partition::default()
        }
    }

    fn mk_stats(parts: Vec<Partition>) -> Statistics {
        let mut topic = Topic {
            topic: "notifications".into(),
            ..Topic::default()
        };
        for p in parts {
            topic.partitions.insert(p.partition, p);
        }
        let mut stats = Statistics::default();
        stats.topics.insert("notifications".into(), topic);
        stats
    }

    #[test]
    fn only_assigned_partitions_with_a_known_lag_count() {
        let stats = mk_stats(vec![
            mk_partition(1, true, 7),
            mk_partition(0, true, 0),
            // Not this worker's (another member of the group has it).
            mk_partition(2, false, 40),
            // No committed offset yet.
            mk_partition(3, true, -1),
            // librdkafka's internal "unassigned" partition.
            mk_partition(-1, true, 5),
        ]);
        assert_eq!(
            partition_lags(&stats),
            vec![
                ("notifications".to_owned(), 0, 0),
                ("notifications".to_owned(), 1, 7)
            ]
        );
    }

    #[test]
    fn a_report_replaces_the_previous_one() {
        let metrics = Metrics::new();
        let ctx = LagContext {
            metrics: metrics.clone(),
        };
        ctx.stats(mk_stats(vec![
            mk_partition(0, true, 3),
            mk_partition(1, true, 9),
        ]));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"switchboard_worker_kafka_consumer_lag{topic="notifications",partition="1"} 9"#
            ),
            "{text}"
        );
        // Partition 1 went to another worker.
        ctx.stats(mk_stats(vec![mk_partition(0, true, 1)]));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"switchboard_worker_kafka_consumer_lag{topic="notifications",partition="0"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains(r#"partition="1""#), "{text}");
    }
}

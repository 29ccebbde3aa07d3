//! Which offset may be stored when messages finish out of order.
//!
//! The worker processes up to `notifications.kafka.max_in_flight` messages at once, so
//! offset 7 of a partition may finish before offset 5. Kafka keeps one position per
//! partition, so the worker may store an offset only when it and every earlier message
//! of its partition are done: the contiguous prefix. Pure bookkeeping, no I/O.

use std::collections::{BTreeSet, HashMap};

/// A partition: topic and partition number.
pub type Partition = (String, i32);

/// In-flight and finished offsets per partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<Partition, PartitionState>,
}

#[derive(Debug)]
struct PartitionState {
    /// Started and not yet finished. A partition's messages arrive in offset order, so
    /// the lowest entry is the first unfinished one.
    pending: BTreeSet<i64>,
    /// The highest finished offset.
    done_max: i64,
    /// The last offset handed out to be stored (everything up to it is done).
    stored: i64,
}

impl OffsetTracker {
    /// A message was received and is being processed.
    pub fn start(&mut self, p: &Partition, offset: i64) {
        let s = self
            .partitions
            .entry(p.clone())
            .or_insert_with(|| PartitionState {
                pending: BTreeSet::new(),
                done_max: offset - 1,
                stored: offset - 1,
            });
        s.pending.insert(offset);
    }

    /// A message is done (processed or dead-lettered). Returns the offset to store when
    /// the partition's contiguous prefix of finished messages grew: that offset and every
    /// earlier one are done (librdkafka commits it + 1, the next to read).
    pub fn finish(&mut self, p: &Partition, offset: i64) -> Option<i64> {
        let s = self.partitions.get_mut(p)?;
        // A replay after a rebalance may have started the same offset twice; the first
        // copy to finish has processed the message.
        if !s.pending.remove(&offset) {
            return None;
        }
        s.done_max = s.done_max.max(offset);
        let prefix = match s.pending.first() {
            Some(first) => first - 1,
            None => s.done_max,
        };
        if prefix > s.stored {
            s.stored = prefix;
            Some(prefix)
        } else {
            None
        }
    }

    /// Messages started and not finished, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|s| s.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_partition(n: i32) -> Partition {
        ("notifications".into(), n)
    }

    #[test]
    fn out_of_order_completion_stores_only_the_contiguous_prefix() {
        let p = mk_partition(0);
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.start(&p, o);
        }
        // 12 and 13 finish first: 10 is still running, nothing may be stored.
        assert_eq!(t.finish(&p, 12), None);
        assert_eq!(t.finish(&p, 13), None);
        // 10 finishes: 10 is the prefix (11 still runs).
        assert_eq!(t.finish(&p, 10), Some(10));
        // 11 finishes: 11, 12, 13 are all done.
        assert_eq!(t.finish(&p, 11), Some(13));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.finish(&p, 14), Some(14));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent_and_gaps_in_offsets_are_fine() {
        let (a, b) = (mk_partition(0), mk_partition(1));
        let mut t = OffsetTracker::default();
        // Offsets of a partition need not be consecutive (compaction, transaction markers).
        t.start(&a, 3);
        t.start(&a, 8);
        t.start(&b, 100);
        assert_eq!(t.finish(&b, 100), Some(100));
        assert_eq!(t.finish(&a, 8), None, "8 is done but 3 is not");
        // 3 done: everything up to 8 is (4 to 7 do not exist).
        assert_eq!(t.finish(&a, 3), Some(8));
        t.start(&a, 9);
        t.start(&a, 12);
        assert_eq!(t.finish(&a, 12), None, "9 still runs: nothing new");
        assert_eq!(t.finish(&a, 9), Some(12));
    }

    #[test]
    fn a_slow_first_message_holds_the_partition_back_but_not_the_count() {
        let p = mk_partition(0);
        let mut t = OffsetTracker::default();
        t.start(&p, 0);
        for o in 1..=31 {
            t.start(&p, o);
            assert_eq!(t.finish(&p, o), None, "offset 0 is unfinished");
        }
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.finish(&p, 0), Some(31));
    }

    #[test]
    fn an_offset_started_twice_and_unknown_finishes_store_nothing_new() {
        let p = mk_partition(0);
        let mut t = OffsetTracker::default();
        t.start(&p, 5);
        t.start(&p, 5);
        assert_eq!(t.finish(&p, 5), Some(5));
        assert_eq!(t.finish(&p, 5), None);
        assert_eq!(t.finish(&mk_partition(9), 1), None);
        // The first message of a partition never stores the offset before it.
        t.start(&mk_partition(2), 40);
        t.start(&mk_partition(2), 41);
        assert_eq!(t.finish(&mk_partition(2), 41), None);
    }
}

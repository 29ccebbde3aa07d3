//! What the coordinator tells a worker process, and what the worker answers, as one
//! JSON object per line on the worker's stdin and stdout.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, from 1 µs to 2 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    #[allow(clippy::unwrap_used)] // constant, valid bounds
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()
}

/// A histogram as `(value, count)` pairs, to cross the process boundary.
pub type HistDump = Vec<(u64, u64)>;

pub fn dump(h: &Histogram<u64>) -> HistDump {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

pub fn merge(into: &mut Histogram<u64>, d: &HistDump) {
    for &(v, n) in d {
        into.saturating_record_n(v, n);
    }
}

/// Who sends `message:send` once the run starts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum SendPlan {
    /// Nobody: connections are held (idle).
    None,
    /// One connection (`idx`), `rate` messages a second.
    One { idx: usize, rate: f64 },
    /// Every connection, `rate` messages a second each, start times spread over a period.
    All { rate: f64 },
}

/// One worker's share of a scenario: connections `first..first + count` of `total`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// `host:port` of each server node; connection `i` goes to `targets[i % len]`.
    pub targets: Vec<String>,
    /// Local address every client socket of this worker binds to (127.0.0.x).
    pub source_ip: String,
    /// HS256 secret for the tokens.
    pub secret: String,
    pub tenant: String,
    pub first: usize,
    pub count: usize,
    pub total: usize,
    /// Members per room (connection `i` is in room `i / room_size`); 0: no room.
    pub room_size: usize,
    pub room_prefix: String,
    /// Stop after the Engine.IO open (no Socket.IO connect to /chat): to see what the
    /// transport alone costs.
    #[serde(default)]
    pub transport_only: bool,
    pub send: SendPlan,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// The worker stops by itself after this many seconds, whatever it is told.
    pub deadline_secs: u64,
}

impl WorkerSpec {
    pub fn room_of(&self, idx: usize) -> Option<usize> {
        (self.room_size > 0).then(|| idx / self.room_size)
    }

    /// Members of connection `idx`'s room (the last room may be short).
    pub fn room_members(&self, idx: usize) -> usize {
        match self.room_of(idx) {
            Some(r) => self.room_size.min(self.total - r * self.room_size),
            None => 0,
        }
    }

    pub fn target_of(&self, idx: usize) -> usize {
        idx % self.targets.len()
    }

    /// Send rate of connection `idx` (0 = does not send).
    pub fn rate_of(&self, idx: usize) -> f64 {
        match self.send {
            SendPlan::None => 0.0,
            SendPlan::One { idx: s, rate } if s == idx => rate,
            SendPlan::One { .. } => 0.0,
            SendPlan::All { rate } => rate,
        }
    }
}

/// Commands on the worker's stdin after the spec line.
pub const CMD_RUN: &str = "run";
pub const CMD_DRAIN: &str = "drain";
pub const CMD_STOP: &str = "stop";

/// First answer: every connection attempt is over (connected, failed or timed out).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ready {
    pub connected: u64,
    pub failed: u64,
    /// Wall clock (µs since the epoch) of the first attempt and the last completion.
    pub start_us: u64,
    pub end_us: u64,
    /// A few distinct failure reasons.
    pub errors: Vec<String>,
    /// Per connection: TCP + WebSocket + Socket.IO connect + room join, µs.
    pub connect_hist: HistDump,
}

/// Last answer, after `stop`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub sent: u64,
    pub acks_ok: u64,
    pub acks_err: u64,
    /// Requests still unanswered at stop.
    pub acks_missing: u64,
    /// `message:new` received while the run phase lasted, and in all.
    pub delivered_run: u64,
    pub delivered_total: u64,
    /// `message:new` a sender got for its own message (servers that echo).
    pub self_delivered: u64,
    /// Deliveries the sends of this worker should cause (sends × other room members).
    pub expected: u64,
    /// Connections lost before stop.
    pub dropped: u64,
    pub ack_hist: HistDump,
    /// Delivery latency by the receiver's server node (index into `targets`).
    pub delivery_hist: Vec<HistDump>,
    pub errors: Vec<String>,
}

/// A worker's line on stdout.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerMsg {
    Ready(Ready),
    Report(Report),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(total: usize, room_size: usize) -> WorkerSpec {
        WorkerSpec {
            targets: vec!["a".into(), "b".into()],
            source_ip: "127.0.0.2".into(),
            secret: "s".into(),
            tenant: "t".into(),
            first: 0,
            count: total,
            total,
            room_size,
            room_prefix: "r".into(),
            transport_only: false,
            send: SendPlan::One { idx: 0, rate: 5.0 },
            concurrency: 1,
            deadline_secs: 1,
        }
    }

    #[test]
    fn rooms_targets_and_rates() {
        let s = spec(25, 10);
        assert_eq!(s.room_of(19), Some(1));
        assert_eq!(s.room_members(3), 10);
        assert_eq!(s.room_members(24), 5);
        assert_eq!((s.target_of(0), s.target_of(7)), (0, 1));
        assert_eq!((s.rate_of(0), s.rate_of(1)), (5.0, 0.0));
        assert_eq!(spec(3, 0).room_of(2), None);
    }

    #[test]
    fn histograms_survive_the_dump() {
        let mut h = histogram();
        for v in [10, 20, 1000, 50_000] {
            h.record(v).unwrap();
        }
        let mut back = histogram();
        merge(&mut back, &dump(&h));
        assert_eq!(back.len(), 4);
        assert_eq!(back.value_at_quantile(1.0), h.value_at_quantile(1.0));
    }
}

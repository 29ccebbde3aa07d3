//! When each connection of a draining node is closed (pure; no clock, no I/O).

use std::time::Duration;

/// The close time of each of `n` connections, as offsets from the start of the drain:
/// evenly spread over `window`, the last one at `window` itself. The `i`-th connection
/// closes at `window × (i + 1) / n`, so every client gets some notice (`within_ms` > 0
/// for a window > 0) and each close moves `1 / n` of the node's clients at once.
pub fn close_times(n: usize, window: Duration) -> Vec<Duration> {
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    (1..=n32)
        .map(|i| window.mul_f64(f64::from(i) / f64::from(n32)))
        .collect()
}

/// `within_ms` of the `server:draining` notice: whole milliseconds until the close,
/// rounded up, so a client is never told less time than it has.
pub fn within_ms(at: Duration) -> u64 {
    let ms = at.as_micros().div_ceil(1000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The query parameters of an Engine.IO request that the drain looks at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EngineQuery<'a> {
    /// `sid`: absent on a handshake (a new connection), present on every later request.
    pub sid: Option<&'a str>,
    /// `transport=websocket` (a WebSocket handshake or an upgrade).
    pub websocket: bool,
}

impl<'a> EngineQuery<'a> {
    pub fn parse(query: &'a str) -> Self {
        let mut q = EngineQuery::default();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("sid", v)) if !v.is_empty() => q.sid = Some(v),
                Some(("transport", v)) => q.websocket = v == "websocket",
                _ => {}
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_spread_evenly_and_end_with_the_window() {
        let w = Duration::from_secs(10);
        let t = close_times(4, w);
        assert_eq!(
            t,
            [2500, 5000, 7500, 10_000]
                .map(Duration::from_millis)
                .to_vec()
        );
        assert!(close_times(0, w).is_empty());
        assert_eq!(close_times(1, w), [w]);
        // Many connections: equal steps, in order, none after the window.
        let t = close_times(1000, w);
        assert!(t.windows(2).all(|p| p[0] < p[1]));
        assert_eq!(*t.last().unwrap(), w);
        assert_eq!(t[0], Duration::from_millis(10));
        // No window: everything at once.
        assert!(close_times(3, Duration::ZERO).iter().all(|d| d.is_zero()));
    }

    #[test]
    fn within_ms_never_promises_less_than_there_is() {
        assert_eq!(within_ms(Duration::from_micros(2_500_001)), 2501);
        assert_eq!(within_ms(Duration::from_millis(2500)), 2500);
        assert_eq!(within_ms(Duration::ZERO), 0);
    }

    #[test]
    fn engine_queries() {
        let q = EngineQuery::parse("EIO=4&transport=polling&t=Pz1a");
        assert_eq!(
            q,
            EngineQuery {
                sid: None,
                websocket: false
            }
        );
        let q = EngineQuery::parse("EIO=4&transport=websocket&sid=abc123");
        assert_eq!(q.sid, Some("abc123"));
        assert!(q.websocket);
        assert_eq!(EngineQuery::parse("sid=&transport=websocket").sid, None);
        assert_eq!(EngineQuery::parse(""), EngineQuery::default());
    }
}

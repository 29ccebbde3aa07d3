//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! both write. Every write carries the resourceVersion it read: of two replicas racing
//! for the same Lease, the API server accepts one and answers 409 to the other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Error};
use tokio::time::Instant;

/// What a replica should do with the Lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// Nobody holds it, or the holder stopped renewing: take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it.
    Wait { holder: String },
}

/// Decide from the Lease's spec (pure). `unchanged_for` is how long this replica has seen
/// the same record, on its own monotonic clock: as in client-go, a holder counts as gone
/// only after its record stayed unchanged for a whole lease duration here. The holder's
/// `renewTime` is never compared with our wall clock, so clock skew between replicas
/// cannot make one take a live Lease.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> LeaseAction {
    let Some(spec) = spec else {
        return LeaseAction::Acquire;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return LeaseAction::Acquire;
    }
    if holder == me {
        return LeaseAction::Renew;
    }
    let secs = spec.lease_duration_seconds.unwrap_or(15).max(1);
    let duration = Duration::from_secs(u64::try_from(secs).unwrap_or(15));
    if unchanged_for >= duration {
        LeaseAction::Acquire
    } else {
        LeaseAction::Wait { holder }
    }
}

/// The Lease record as this replica last saw it, and since when (monotonic clock).
#[derive(Clone, Debug)]
struct Seen {
    record: Option<LeaseSpec>,
    since: Instant,
}

/// One replica's view of the election.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The record last read and when it last changed; shared by clones.
    seen: Arc<Mutex<Option<Seen>>>,
}

fn conflict(e: &Error) -> bool {
    matches!(e, Error::Api(s) if s.code == 409)
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            seen: Arc::new(Mutex::new(None)),
        }
    }

    /// Record `record` as read now; how long it has been unchanged.
    fn observe(&self, record: Option<&LeaseSpec>) -> Duration {
        let now = Instant::now();
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.as_ref() {
            Some(s) if s.record.as_ref() == record => now.duration_since(s.since),
            _ => {
                *seen = Some(Seen {
                    record: record.cloned(),
                    since: now,
                });
                Duration::ZERO
            }
        }
    }

    /// A leader stops writing this long after the last renewal it sent that succeeded:
    /// two thirds of the lease, well before another replica may take it over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often a leader renews: a third of the lease, so two renewals may fail.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    fn spec(&self, now: Timestamp, previous: Option<&LeaseSpec>, acquiring: bool) -> LeaseSpec {
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.duration.as_secs()).unwrap_or(15)),
            acquire_time: if acquiring {
                Some(MicroTime(now))
            } else {
                previous.and_then(|p| p.acquire_time.clone())
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if acquiring && previous.is_some() {
                transitions + 1
            } else {
                transitions
            }),
            ..Default::default()
        }
    }

    /// Take or renew the Lease; `Ok(true)` while we lead.
    pub async fn try_lead(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, None, true)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(created.spec.as_ref());
                    Ok(true)
                }
                Err(e) if conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let unchanged_for = self.observe(lease.spec.as_ref());
        let action = decide(lease.spec.as_ref(), &self.identity, unchanged_for);
        let acquiring = match action {
            LeaseAction::Wait { .. } => return Ok(false),
            LeaseAction::Acquire => true,
            LeaseAction::Renew => false,
        };
        lease.spec = Some(self.spec(now, lease.spec.as_ref(), acquiring));
        // `replace` sends the resourceVersion we read: a concurrent writer makes it 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(written.spec.as_ref());
                Ok(true)
            }
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give the Lease up (on shutdown) so another replica takes over at once.
    pub async fn release(&self) -> Result<(), Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Wait until we lead, trying every `retry`.
    pub async fn acquire(&self, retry: Duration) {
        loop {
            match self.try_lead().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: API error"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renew until a renewal is refused, or until no renewal has succeeded for
    /// [`Self::renew_deadline`] since `led_since` (when the request that won the Lease was
    /// sent); then return, so the caller stops writing before another replica can take
    /// the Lease. Each renewal is cut off at that deadline: a hung request cannot keep a
    /// replica believing it leads. Times are those at which requests were *sent*, the
    /// safe side of the margin.
    pub async fn hold(&self, led_since: Instant) {
        let mut last_ok = led_since;
        loop {
            tokio::time::sleep(self.renew_every()).await;
            let sent = Instant::now();
            let left = (last_ok + self.renew_deadline()).saturating_duration_since(sent);
            if left.is_zero() {
                tracing::warn!("leader election: no renewal within the deadline");
                return;
            }
            match tokio::time::timeout(left, self.try_lead()).await {
                Ok(Ok(true)) => last_ok = sent,
                Ok(Ok(false)) => return,
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election: renewal failed"),
                Err(_) => {
                    tracing::warn!("leader election: renewal timed out at the deadline");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    #[test]
    fn free_held_and_expired_leases() {
        let secs = Duration::from_secs;
        assert_eq!(decide(None, "a", secs(0)), LeaseAction::Acquire);
        let held = spec("b", "2026-01-01T00:00:00Z", 15);
        assert_eq!(
            decide(Some(&held), "a", secs(10)),
            LeaseAction::Wait { holder: "b".into() }
        );
        assert_eq!(decide(Some(&held), "b", secs(0)), LeaseAction::Renew);
        // Unchanged for a whole lease duration on our clock: gone.
        assert_eq!(decide(Some(&held), "a", secs(15)), LeaseAction::Acquire);
        let released = LeaseSpec::default();
        assert_eq!(decide(Some(&released), "a", secs(0)), LeaseAction::Acquire);
    }

    /// The holder's renewTime is not compared with our clock: a record stamped long ago
    /// (a holder whose clock is behind) is still live while it keeps changing.
    #[test]
    fn a_skewed_renew_time_does_not_expire_a_live_lease() {
        let ancient = spec("b", "2000-01-01T00:00:00Z", 15);
        assert_eq!(
            decide(Some(&ancient), "a", Duration::from_secs(1)),
            LeaseAction::Wait { holder: "b".into() }
        );
    }

    /// An API server that accepts connections and never answers: the leader must give up
    /// at the renew deadline, not hang in the request.
    #[tokio::test]
    async fn a_hung_renewal_ends_leadership_at_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _black_hole = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let url: http::Uri = format!("http://{addr}").parse().unwrap();
        let mut config = kube::Config::new(url);
        config.read_timeout = None;
        config.write_timeout = None;
        crate::install_crypto_provider();
        let client = Client::try_from(config).unwrap();
        let lease = Duration::from_secs(3);
        let e = Elector::new(client, "default", "op", "a", lease);
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), e.hold(started))
            .await
            .expect("hold() returned");
        let took = started.elapsed();
        assert!(
            took <= e.renew_deadline() + Duration::from_millis(500),
            "a hung renewal kept the leadership for {took:?}"
        );
    }
}

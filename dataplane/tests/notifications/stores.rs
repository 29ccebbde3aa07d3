//! The notification stores on memory and on Redis: one check per trait, run on both.

use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::ClientLike;
use fred::prelude::{Builder, Config};
use fred::types::RespVersion;
use serde_json::Map;
use switchboard_dataplane::devices::redis::RedisDevices;
use switchboard_dataplane::devices::{Device, DeviceStore, MemoryDevices, Platform, Registered};
use switchboard_dataplane::notifications::delivery::{
    Claim, DeliveryStore, MemoryDelivery, Progress, Record, State,
};
use switchboard_dataplane::notifications::redis::{RedisDelivery, RedisInbox};
use switchboard_dataplane::notifications::{Entry, InboxStore, MemoryInbox};
use switchboard_dataplane::preferences::redis::RedisPreferences;
use switchboard_dataplane::preferences::{
    Kind, MemoryPreferences, PreferenceStore, Preferences, Priority,
};

use crate::common::fresh;

async fn redis() -> Option<fred::clients::Client> {
    let url = crate::support::redis_url()?;
    let mut cfg = Config::from_url(&url).unwrap();
    cfg.version = RespVersion::RESP3;
    let c = Builder::from_config(cfg).build().unwrap();
    c.init().await.unwrap();
    Some(c)
}

fn mk_entry(id: &str, at: i64) -> Entry {
    Entry {
        id: id.into(),
        kind: Kind::Message,
        priority: Priority::Normal,
        title: "t".into(),
        body: "b".into(),
        data: Map::new(),
        created_at: at,
        read: false,
    }
}

fn mk_device(token: &str, at: i64) -> Device {
    Device {
        platform: Platform::Fcm,
        token: token.into(),
        app_id: None,
        environment: None,
        registered_at: at,
    }
}

fn mk_record(user: &str, token: &str, state: State) -> Record {
    Record {
        user_id: user.into(),
        channel: "fcm".into(),
        target: token.into(),
        state,
        reason: None,
        attempts: 1,
        updated_at: 1,
        owner: None,
        lease_until: None,
    }
}

fn mk_claim(owner: &str, lease_until: i64) -> Record {
    Record {
        owner: Some(owner.into()),
        lease_until: Some(lease_until),
        ..mk_record("u", "tok2", State::Claimed)
    }
}

async fn check_inbox(s: Arc<dyn InboxStore>) {
    let (t, other) = (fresh("t"), fresh("t"));
    for i in 0..5 {
        assert!(
            s.add(&t, "u", &mk_entry(&format!("n{i}"), 100 + i), 3)
                .await
                .unwrap()
        );
    }
    assert!(
        !s.add(&t, "u", &mk_entry("n4", 999), 3).await.unwrap(),
        "same id twice"
    );
    let ids = |v: Vec<Entry>| v.into_iter().map(|e| (e.id, e.read)).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list(&t, "u", false, 10).await.unwrap()),
        [
            ("n4".into(), false),
            ("n3".into(), false),
            ("n2".into(), false)
        ]
    );
    assert_eq!(
        s.mark_read(&t, "u", &["n3".into(), "n0".into(), "zz".into()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.mark_read(&t, "u", &["n3".into()]).await.unwrap(), 0);
    assert_eq!(
        ids(s.list(&t, "u", true, 10).await.unwrap()),
        [("n4".into(), false), ("n2".into(), false)]
    );
    assert_eq!(
        ids(s.list(&t, "u", false, 2).await.unwrap()),
        [("n4".into(), false), ("n3".into(), true)]
    );
    assert!(s.list(&other, "u", false, 10).await.unwrap().is_empty());
    assert_eq!(s.mark_read(&other, "u", &["n4".into()]).await.unwrap(), 0);
    // unread_only pages past read entries: newest two read, limit 1.
    let u2 = fresh("u");
    for i in 0..5 {
        s.add(&t, &u2, &mk_entry(&format!("m{i}"), 100 + i), 10)
            .await
            .unwrap();
    }
    s.mark_read(&t, &u2, &["m4".into(), "m3".into()])
        .await
        .unwrap();
    assert_eq!(
        ids(s.list(&t, &u2, true, 1).await.unwrap()),
        [("m2".into(), false)]
    );
    assert_eq!(
        ids(s.list(&t, &u2, true, 2).await.unwrap()),
        [("m2".into(), false), ("m1".into(), false)]
    );
    assert_eq!(s.list(&t, &u2, true, 100).await.unwrap().len(), 3);
}

async fn check_devices(s: Arc<dyn DeviceStore>) {
    let (t, other) = (fresh("t"), fresh("t"));
    assert_eq!(
        s.register(&t, "a", &mk_device("tok1", 10), 2)
            .await
            .unwrap(),
        Registered::Ok
    );
    assert_eq!(
        s.register(&t, "a", &mk_device("tok2", 20), 2)
            .await
            .unwrap(),
        Registered::Ok
    );
    assert_eq!(
        s.register(&t, "a", &mk_device("tok3", 30), 2)
            .await
            .unwrap(),
        Registered::TooMany
    );
    assert_eq!(
        s.register(&t, "a", &mk_device("tok2", 25), 2)
            .await
            .unwrap(),
        Registered::Ok,
        "refresh"
    );
    // The token moves to another tenant: the old tenant loses it, and the global index
    // names the new one.
    assert_eq!(
        s.register(&other, "b", &mk_device("tok1", 40), 2)
            .await
            .unwrap(),
        Registered::Ok
    );
    let toks = |v: Vec<Device>| v.into_iter().map(|d| d.token).collect::<Vec<_>>();
    assert_eq!(toks(s.list(&t, "a").await.unwrap()), ["tok2"]);
    assert_eq!(
        s.token_tenant(Platform::Fcm, "tok1").await.unwrap(),
        Some(other.clone())
    );
    assert_eq!(s.token_tenant(Platform::Apns, "tok1").await.unwrap(), None);
    // And back, to another user of the first tenant.
    assert_eq!(
        s.register(&t, "b", &mk_device("tok1", 50), 2)
            .await
            .unwrap(),
        Registered::Ok
    );
    assert_eq!(toks(s.list(&t, "a").await.unwrap()), ["tok2"]);
    assert_eq!(toks(s.list(&t, "b").await.unwrap()), ["tok1"]);
    assert!(s.list(&other, "b").await.unwrap().is_empty());
    assert_eq!(
        s.token_tenant(Platform::Fcm, "tok1").await.unwrap(),
        Some(t.clone())
    );
    // A prune spares a device registered after the provider's timestamp.
    assert!(!s.prune(&t, "b", "tok1", Some(49)).await.unwrap());
    assert!(s.prune(&t, "b", "tok1", Some(50)).await.unwrap());
    assert_eq!(s.token_tenant(Platform::Fcm, "tok1").await.unwrap(), None);
    assert!(s.prune(&t, "a", "tok2", None).await.unwrap());
    assert!(!s.unregister(&t, "a", "tok2").await.unwrap());
    assert!(!s.unregister(&other, "b", "tok1").await.unwrap());
    s.register(&other, "b", &mk_device("tok1", 60), 2)
        .await
        .unwrap();
    assert!(s.unregister(&other, "b", "tok1").await.unwrap());
    assert_eq!(s.token_tenant(Platform::Fcm, "tok1").await.unwrap(), None);
    assert_eq!(s.email(&t, "a").await.unwrap(), None);
    s.set_email(&t, "a", "a@x.test").await.unwrap();
    assert_eq!(s.email(&t, "a").await.unwrap().as_deref(), Some("a@x.test"));
    assert_eq!(s.email(&other, "a").await.unwrap(), None);
}

async fn check_delivery(s: Arc<dyn DeliveryStore>) {
    let (t, other) = (fresh("t"), fresh("t"));
    assert_eq!(s.status(&t, "n1").await.unwrap(), None);
    s.accept(&t, "n1").await.unwrap();
    assert_eq!(
        s.status(&t, "n1").await.unwrap(),
        Some((Progress::Queued, vec![]))
    );
    let r = mk_record("u", "tok", State::Claimed);
    assert_eq!(s.claim(&t, "n1", &r, 0).await.unwrap(), Claim::Fresh);
    assert_eq!(
        s.claim(&t, "n1", &r, 0).await.unwrap(),
        Claim::Reclaimed,
        "a claim never finished"
    );
    s.put(&t, "n1", &mk_record("u", "tok", State::Sent))
        .await
        .unwrap();
    assert_eq!(
        s.claim(&t, "n1", &r, 0).await.unwrap(),
        Claim::Finished(State::Sent)
    );
    assert_eq!(s.progress(&t, "n1").await.unwrap(), Some(Progress::Queued));
    s.done(&t, "n1").await.unwrap();
    s.accept(&t, "n1").await.unwrap();
    let (p, recs) = s.status(&t, "n1").await.unwrap().unwrap();
    assert_eq!(p, Progress::Done, "accept never resets progress");
    assert_eq!(recs, [mk_record("u", "tok", State::Sent)]);
    assert_eq!(s.status(&other, "n1").await.unwrap(), None);
    assert_eq!(s.progress(&other, "n1").await.unwrap(), None);
    s.fail(&t, "n1").await.unwrap();
    assert_eq!(
        s.progress(&t, "n1").await.unwrap(),
        Some(Progress::Done),
        "done stays done"
    );
    s.fail(&t, "n2").await.unwrap();
    assert_eq!(s.progress(&t, "n2").await.unwrap(), Some(Progress::Failed));

    // Run lock and leases: a live owner's claim is busy; a dead owner's is taken over.
    let ttl = Duration::from_secs(30);
    assert!(s.lock(&t, "n3", "a", ttl).await.unwrap());
    assert!(!s.lock(&t, "n3", "b", ttl).await.unwrap());
    assert!(s.lock(&other, "n3", "b", ttl).await.unwrap(), "per tenant");
    assert_eq!(
        s.claim(&t, "n3", &mk_claim("a", 1_000), 0).await.unwrap(),
        Claim::Fresh
    );
    assert_eq!(
        s.claim(&t, "n3", &mk_claim("b", 1_000), 5).await.unwrap(),
        Claim::Busy
    );
    assert_eq!(
        s.claim(&t, "n3", &mk_claim("a", 1_000), 5).await.unwrap(),
        Claim::Reclaimed,
        "its own claim"
    );
    assert!(!s.renew(&t, "n3", "b", ttl).await.unwrap());
    assert!(s.renew(&t, "n3", "a", ttl).await.unwrap());
    s.unlock(&t, "n3", "b").await.unwrap();
    assert!(
        !s.lock(&t, "n3", "b", ttl).await.unwrap(),
        "b cannot release a's lock"
    );
    s.unlock(&t, "n3", "a").await.unwrap();
    assert_eq!(
        s.claim(&t, "n3", &mk_claim("b", 1_000), 5).await.unwrap(),
        Claim::Reclaimed,
        "a's run is over"
    );
    assert!(
        s.lock(&t, "n3", "b", Duration::from_millis(100))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(s.lock(&t, "n3", "c", ttl).await.unwrap(), "a lock lapses");
}

async fn check_preferences(s: Arc<dyn PreferenceStore>) {
    let (t, other) = (fresh("t"), fresh("t"));
    assert_eq!(s.get(&t, "u").await.unwrap(), Preferences::default());
    let mut p = Preferences::default();
    p.types.call = false;
    s.put(&t, "u", &p).await.unwrap();
    assert_eq!(s.get(&t, "u").await.unwrap(), p);
    assert_eq!(s.get(&other, "u").await.unwrap(), Preferences::default());
    // Concurrent updates of different fields: none is lost.
    let u = fresh("u");
    let ups: Vec<_> = (0..4)
        .map(|i| {
            let (s, t, u) = (s.clone(), t.clone(), u.clone());
            tokio::spawn(async move {
                s.update(&t, &u, &move |mut p: Preferences| {
                    match i {
                        0 => p.types.call = false,
                        1 => p.types.message = false,
                        2 => p.types.mention = false,
                        _ => p.types.system = false,
                    }
                    Ok(p)
                })
                .await
                .unwrap()
                .unwrap()
            })
        })
        .collect();
    for h in ups {
        h.await.unwrap();
    }
    let got = s.get(&t, &u).await.unwrap().types;
    assert!(
        !got.call && !got.message && !got.mention && !got.system,
        "{got:?}"
    );
    let refused = s.update(&t, &u, &|_| Err("no".to_owned())).await.unwrap();
    assert_eq!(refused, Err("no".to_owned()));
}

#[tokio::test]
async fn memory_stores() {
    check_inbox(Arc::new(MemoryInbox::default())).await;
    check_devices(Arc::new(MemoryDevices::default())).await;
    check_delivery(Arc::new(MemoryDelivery::default())).await;
    check_preferences(Arc::new(MemoryPreferences::default())).await;
}

#[tokio::test]
async fn redis_stores() {
    let Some(c) = redis().await else { return };
    check_inbox(Arc::new(RedisInbox::new(c.clone()))).await;
    check_devices(Arc::new(RedisDevices::new(c.clone()))).await;
    check_delivery(Arc::new(RedisDelivery::new(c.clone()))).await;
    check_preferences(Arc::new(RedisPreferences::new(c))).await;
}

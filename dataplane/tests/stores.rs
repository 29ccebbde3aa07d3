//! Storage conformance: the same checks against the in-memory stores and the Redis
//! stores, one generic check per trait.
//!
//! The Redis half needs `SWITCHBOARD_TEST_REDIS_URL` (`tests/env/envctl up redis`, then
//! `source tests/.state/env`). Without it the Redis tests are skipped, except under
//! `CI=true` where they fail. Every test uses fresh tenants, so runs never collide.

use std::time::Duration;

use anyhow::{Result, bail};
use fred::clients::Client;
use fred::interfaces::{
    ClientLike, HashesInterface, KeysInterface, LuaInterface, SortedSetsInterface, StreamsInterface,
};
use fred::prelude::{Builder, Config};
use fred::types::{RespVersion, Value};
use serde_json::json;

use switchboard_dataplane::auth::Identity;
use switchboard_dataplane::auth::revocation::redis::RedisRevocations;
use switchboard_dataplane::auth::revocation::{MemoryRevocations, RevocationStore, Target};
use switchboard_dataplane::clock::now_ms;
use switchboard_dataplane::error::StoreError;
use switchboard_dataplane::history::change::{Change, Reaction, Refusal};
use switchboard_dataplane::history::redis::RedisHistory;
use switchboard_dataplane::history::{
    MemoryHistory, Message, MessageStore, Page, Retention, select_page,
};
use switchboard_dataplane::limits::redis::RedisBudgets;
use switchboard_dataplane::limits::{Class, MemoryBudgets, UserBudgets};
use switchboard_dataplane::online::redis::RedisOnline;
use switchboard_dataplane::online::{MemoryOnline, OnlineStore};
use switchboard_dataplane::receipts::redis::RedisReceipts;
use switchboard_dataplane::receipts::{Kind, MemoryReceipts, Privacy, ReceiptStore, RoomAdds};
use switchboard_dataplane::rooms::redis::RedisRooms;
use switchboard_dataplane::rooms::{
    Added, Created, Held, MemoryRooms, Mute, Room, RoomStore, Sanctioned, Standing, Visibility,
};
use switchboard_dataplane::sync::redis::RedisChanges;
use switchboard_dataplane::sync::{ChangeIndex, Changed, MemoryChanges};
use switchboard_dataplane::typing::redis::RedisTyping;
use switchboard_dataplane::typing::{MemoryTyping, TypingStore, Typist};

// === harness ===

/// A connected client, `None` when the Redis tests are skipped.
async fn redis() -> Result<Option<Client>> {
    let Some(url) = switchboard_smoke::endpoint("SWITCHBOARD_TEST_REDIS_URL") else {
        return Ok(None);
    };
    let mut config = Config::from_url(&url)?;
    config.version = RespVersion::RESP3;
    let client = Builder::from_config(config).build()?;
    client.init().await?;
    Ok(Some(client))
}

/// Two tenants nobody else uses.
fn tenants() -> (String, String) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    (format!("t{run}-a"), format!("t{run}-b"))
}

/// Every key holding a tenant's id starts with `sb:{TENANT}:` (one hash slot per tenant).
async fn assert_keys_tagged(client: &Client, tenants: &[&str]) -> Result<()> {
    let mut seen = 0;
    for t in tenants {
        let v: Value = client
            .eval(
                "return redis.call('KEYS', ARGV[1])",
                Vec::<String>::new(),
                vec![format!("*{t}*")],
            )
            .await?;
        let Value::Array(keys) = v else {
            bail!("KEYS: {v:?}")
        };
        seen += keys.len();
        let prefix = format!("sb:{{{t}}}:");
        for k in keys {
            let k = k.as_string().unwrap_or_default();
            assert!(k.starts_with(&prefix), "key {k:?} is outside {prefix:?}");
        }
    }
    assert!(seen > 0, "no keys written for {tenants:?}");
    Ok(())
}

/// A memory test and a Redis test running one conformance check.
macro_rules! conformance {
    ($check:ident, $memory:ident, $redis:ident, $mem_store:expr, $redis_store:ident) => {
        #[tokio::test]
        async fn $memory() -> Result<()> {
            let (a, b) = tenants();
            $check(&$mem_store, &a, &b).await
        }

        #[tokio::test]
        async fn $redis() -> Result<()> {
            let Some(client) = redis().await? else {
                return Ok(());
            };
            let (a, b) = tenants();
            $check(&$redis_store::new(client.clone()), &a, &b).await?;
            assert_keys_tagged(&client, &[&a, &b]).await?;
            client.quit().await?;
            Ok(())
        }
    };
}

conformance!(
    rooms_conform,
    rooms_memory,
    rooms_redis,
    MemoryRooms::default(),
    RedisRooms
);
conformance!(
    rooms_tenant_cap_conform,
    rooms_tenant_cap_memory,
    rooms_tenant_cap_redis,
    MemoryRooms::default(),
    RedisRooms
);
conformance!(
    rooms_quota_conform,
    rooms_quota_memory,
    rooms_quota_redis,
    MemoryRooms::default(),
    RedisRooms
);
conformance!(
    rooms_moderation_conform,
    rooms_moderation_memory,
    rooms_moderation_redis,
    MemoryRooms::default(),
    RedisRooms
);
conformance!(
    changes_conform,
    changes_memory,
    changes_redis,
    MemoryChanges::default(),
    RedisChanges
);
conformance!(
    history_conform,
    history_memory,
    history_redis,
    MemoryHistory::default(),
    RedisHistory
);
conformance!(
    history_changes_conform,
    history_changes_memory,
    history_changes_redis,
    MemoryHistory::default(),
    RedisHistory
);
conformance!(
    history_threads_conform,
    history_threads_memory,
    history_threads_redis,
    MemoryHistory::default(),
    RedisHistory
);
conformance!(
    receipts_conform,
    receipts_memory,
    receipts_redis,
    MemoryReceipts::default(),
    RedisReceipts
);
conformance!(
    typing_conform,
    typing_memory,
    typing_redis,
    MemoryTyping::default(),
    RedisTyping
);
conformance!(
    online_conform,
    online_memory,
    online_redis,
    MemoryOnline::default(),
    RedisOnline
);
conformance!(
    revocations_conform,
    revocations_memory,
    revocations_redis,
    MemoryRevocations::default(),
    RedisRevocations
);

conformance!(
    budgets_conform,
    budgets_memory,
    budgets_redis,
    MemoryBudgets::default(),
    RedisBudgets
);

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

// === per-user budgets ===

/// A burst at once, then refusals; another class, user and tenant have their own; the
/// budget refills at its rate.
async fn budgets_conform(s: &dyn UserBudgets, t: &str, u: &str) -> Result<()> {
    let b = switchboard_crds::config::Bucket {
        rate: 10.0,
        burst: 5,
    };
    let mut taken = 0;
    for _ in 0..8 {
        if s.take(t, "alice", Class::Message, b).await? {
            taken += 1;
        }
    }
    assert_eq!(taken, 5, "the burst, then nothing");
    assert!(s.take(t, "alice", Class::Read, b).await?, "another class");
    assert!(s.take(t, "bob", Class::Message, b).await?, "another user");
    assert!(
        s.take(u, "alice", Class::Message, b).await?,
        "another tenant"
    );
    // One event per 100 ms.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut refilled = 0;
    while s.take(t, "alice", Class::Message, b).await? {
        refilled += 1;
    }
    assert!(
        (2..=3).contains(&refilled),
        "{refilled} after 250 ms at 10/s"
    );
    Ok(())
}

// === rooms ===

fn room(id: &str, name: &str) -> Room {
    Room {
        id: id.into(),
        name: name.into(),
        visibility: Visibility::Public,
        owner_id: "alice".into(),
        created_at: 1_700_000_000_000,
        slow_mode_s: 0,
    }
}

/// Rooms a tenant may hold at once (`limits.max_rooms_per_tenant`).
const ANY: usize = 1_000_000;

/// One tenant at its cap gets `TooManyRooms` and nothing is written; another tenant is
/// not affected; a deletion frees a place.
async fn rooms_tenant_cap_conform(s: &dyn RoomStore, t: &str, u: &str) -> Result<()> {
    assert_eq!(s.create(t, &room("a", "A"), 2).await?, Created::Created);
    assert_eq!(s.create(t, &room("b", "B"), 2).await?, Created::Created);
    assert_eq!(
        s.create(t, &room("c", "C"), 2).await?,
        Created::TooManyRooms
    );
    assert_eq!(s.get(t, "c").await?, None, "nothing written past the cap");
    assert_eq!(s.create(t, &room("a", "A2"), 2).await?, Created::Taken);
    // The other tenant has its own count.
    for id in ["a", "b"] {
        assert_eq!(s.create(u, &room(id, "Theirs"), 2).await?, Created::Created);
    }
    assert_eq!(
        s.create(u, &room("c", "C"), 2).await?,
        Created::TooManyRooms
    );
    // A deletion frees exactly one place.
    assert!(s.delete(t, "a").await?.is_some());
    assert_eq!(s.create(t, &room("c", "C"), 2).await?, Created::Created);
    assert_eq!(
        s.create(t, &room("d", "D"), 2).await?,
        Created::TooManyRooms
    );
    assert_eq!(s.get(t, "c").await?, Some(room("c", "C")));
    assert_eq!(
        s.create(u, &room("d", "D"), 2).await?,
        Created::TooManyRooms
    );
    Ok(())
}

/// Rooms others add a user to have their own limit and never use up the user's own:
/// at 2 added rooms, further adds are refused while the user's own joins still work;
/// leaving (or a kick, ban or deletion) frees the kind of place it held.
async fn rooms_quota_conform(s: &dyn RoomStore, t: &str, u: &str) -> Result<()> {
    for id in ["x1", "x2", "x3", "own1", "own2", "own3"] {
        assert_eq!(s.create(t, &room(id, id), ANY).await?, Created::Created);
    }
    assert_eq!(s.add_invitee(t, "x1", "victim", 2).await?, Added::Added);
    assert_eq!(s.add_invitee(t, "x2", "victim", 2).await?, Added::Added);
    assert_eq!(
        s.add_invitee(t, "x3", "victim", 2).await?,
        Added::TooManyRooms
    );
    assert_eq!(
        s.add_invitee(t, "x1", "victim", 2).await?,
        Added::AlreadyMember
    );
    assert_eq!(s.held(t, "victim").await?, Held { own: 0, added: 2 });
    assert_eq!(s.add_member(t, "own1", "victim", 2).await?, Added::Added);
    assert_eq!(s.add_member(t, "own2", "victim", 2).await?, Added::Added);
    assert_eq!(
        s.add_member(t, "own3", "victim", 2).await?,
        Added::TooManyRooms
    );
    assert_eq!(s.held(t, "victim").await?, Held { own: 2, added: 2 });
    assert_eq!(
        s.rooms_of(t, "victim").await?,
        strings(&["own1", "own2", "x1", "x2"])
    );
    // Leaving an added room frees an added place, not an own one.
    assert!(s.remove_member(t, "x1", "victim").await?);
    assert_eq!(s.held(t, "victim").await?, Held { own: 2, added: 1 });
    assert_eq!(
        s.add_member(t, "own3", "victim", 2).await?,
        Added::TooManyRooms
    );
    assert_eq!(s.add_invitee(t, "x3", "victim", 2).await?, Added::Added);
    // A ban and a deletion free the place too.
    assert!(matches!(
        s.ban(t, "x3", "victim").await?,
        Sanctioned::Done { was_member: true }
    ));
    assert!(s.delete(t, "x2").await?.is_some());
    assert_eq!(s.held(t, "victim").await?, Held { own: 2, added: 0 });
    // Per tenant.
    assert_eq!(s.held(u, "victim").await?, Held::default());
    Ok(())
}

async fn rooms_conform(s: &dyn RoomStore, t: &str, u: &str) -> Result<()> {
    // Create, conflict, get.
    assert_eq!(
        s.create(t, &room("general", "General"), ANY).await?,
        Created::Created
    );
    assert_eq!(
        s.create(t, &room("general", "Other"), ANY).await?,
        Created::Taken
    );
    assert_eq!(s.get(t, "general").await?, Some(room("general", "General")));
    assert_eq!(s.get(t, "nope").await?, None);
    let mut private = room("secret", "Secret");
    private.visibility = Visibility::Private;
    assert_eq!(s.create(t, &private, ANY).await?, Created::Created);
    assert_eq!(s.get(t, "secret").await?, Some(private));

    // The same id in another tenant is another room.
    assert_eq!(s.get(u, "general").await?, None);
    assert_eq!(
        s.create(u, &room("general", "Theirs"), ANY).await?,
        Created::Created
    );
    assert_eq!(s.get(t, "general").await?, Some(room("general", "General")));
    assert_eq!(s.get(u, "general").await?, Some(room("general", "Theirs")));

    // Membership and the room limit.
    assert_eq!(s.add_member(t, "general", "bob", 2).await?, Added::Added);
    assert_eq!(
        s.add_member(t, "general", "bob", 2).await?,
        Added::AlreadyMember
    );
    assert_eq!(s.add_member(t, "r2", "bob", 2).await?, Added::Added);
    assert_eq!(s.add_member(t, "r3", "bob", 2).await?, Added::TooManyRooms);
    assert_eq!(
        s.add_member(t, "general", "bob", 2).await?,
        Added::AlreadyMember
    );
    assert!(!s.is_member(t, "r3", "bob").await?);
    assert_eq!(s.members(t, "r3", 10).await?, Vec::<String>::new());
    assert_eq!(s.rooms_of(t, "bob").await?, strings(&["general", "r2"]));
    assert_eq!(
        s.add_member(t, "r1", "nobody", 0).await?,
        Added::TooManyRooms
    );
    assert_eq!(s.rooms_of(t, "nobody").await?, Vec::<String>::new());

    // Leaving frees a slot.
    assert!(s.remove_member(t, "r2", "bob").await?);
    assert!(!s.remove_member(t, "r2", "bob").await?);
    assert!(!s.is_member(t, "r2", "bob").await?);
    assert_eq!(s.add_member(t, "r3", "bob", 2).await?, Added::Added);
    assert_eq!(s.rooms_of(t, "bob").await?, strings(&["general", "r3"]));

    // Members in id (byte) order, at most `limit`.
    for user in ["zed", "carol", "alice", "Dave", "al"] {
        assert_eq!(s.add_member(t, "general", user, 10).await?, Added::Added);
    }
    let all = strings(&["Dave", "al", "alice", "bob", "carol", "zed"]);
    assert_eq!(s.members(t, "general", 100).await?, all);
    assert_eq!(s.members(t, "general", 6).await?, all);
    assert_eq!(s.members(t, "general", 2).await?, strings(&["Dave", "al"]));
    assert_eq!(s.members(t, "general", 0).await?, Vec::<String>::new());
    assert_eq!(s.members(t, "general", usize::MAX).await?, all);
    assert_eq!(s.members(t, "nope", 10).await?, Vec::<String>::new());
    assert!(s.is_member(t, "general", "carol").await?);

    // Nothing crosses tenants.
    assert!(!s.is_member(u, "general", "bob").await?);
    assert_eq!(s.members(u, "general", 10).await?, Vec::<String>::new());
    assert_eq!(s.rooms_of(u, "bob").await?, Vec::<String>::new());
    assert_eq!(s.add_member(u, "general", "bob", 1).await?, Added::Added);
    assert_eq!(s.members(u, "general", 10).await?, strings(&["bob"]));
    assert!(!s.remove_member(u, "r3", "bob").await?);
    assert!(s.is_member(t, "r3", "bob").await?);
    assert_eq!(s.members(t, "general", 100).await?, all);

    // Deleting a room takes every membership with it, in this tenant only.
    assert_eq!(s.delete(t, "general").await?, Some(all.clone()));
    assert_eq!(s.get(t, "general").await?, None);
    assert_eq!(s.members(t, "general", 100).await?, Vec::<String>::new());
    assert!(!s.is_member(t, "general", "carol").await?);
    assert_eq!(s.rooms_of(t, "bob").await?, strings(&["r3"]));
    assert_eq!(s.rooms_of(t, "carol").await?, Vec::<String>::new());
    assert_eq!(s.delete(t, "general").await?, None);
    assert_eq!(s.delete(t, "never").await?, None);
    assert_eq!(s.get(u, "general").await?, Some(room("general", "Theirs")));
    assert_eq!(s.members(u, "general", 10).await?, strings(&["bob"]));
    assert_eq!(s.rooms_of(u, "bob").await?, strings(&["general"]));
    // A room without members deletes too, and its id can be taken again.
    assert_eq!(s.delete(t, "secret").await?, Some(vec![]));
    assert_eq!(
        s.create(t, &room("general", "Again"), ANY).await?,
        Created::Created
    );
    assert_eq!(s.members(t, "general", 100).await?, Vec::<String>::new());
    Ok(())
}

/// Roles, bans, mutes and slow mode: a ban is atomic with the membership it removes and
/// bars joining; roles go with the membership, mutes stay; deletion takes all of it;
/// nothing crosses tenants.
async fn rooms_moderation_conform(s: &dyn RoomStore, t: &str, u: &str) -> Result<()> {
    let standing = |member, moderator, banned, muted| Standing {
        member,
        moderator,
        banned,
        muted,
    };
    assert_eq!(
        s.create(t, &room("mod", "Mod"), ANY).await?,
        Created::Created
    );
    for user in ["alice", "bob", "carol"] {
        assert_eq!(s.add_member(t, "mod", user, 10).await?, Added::Added);
    }
    assert_eq!(
        s.standing(t, "mod", "bob").await?,
        standing(true, false, false, None)
    );
    assert_eq!(s.standing(t, "mod", "nobody").await?, Standing::default());

    // Roles: members only; they go with the membership.
    assert!(s.set_moderator(t, "mod", "bob", true).await?);
    assert!(!s.set_moderator(t, "mod", "nobody", true).await?);
    assert_eq!(s.standing(t, "mod", "nobody").await?, Standing::default());
    assert!(s.standing(t, "mod", "bob").await?.moderator);
    assert!(s.set_moderator(t, "mod", "bob", false).await?);
    assert!(!s.standing(t, "mod", "bob").await?.moderator);
    assert!(s.set_moderator(t, "mod", "bob", true).await?);
    assert!(s.remove_member(t, "mod", "bob").await?);
    assert_eq!(s.add_member(t, "mod", "bob", 10).await?, Added::Added);
    assert!(
        !s.standing(t, "mod", "bob").await?.moderator,
        "role left with bob"
    );

    // Mutes: members only, with or without an end; they outlive a leave.
    let until = Mute {
        until: Some(1_700_000_000_123),
    };
    assert_eq!(
        s.mute(t, "mod", "nobody", until).await?,
        None,
        "not a member"
    );
    assert_eq!(
        s.mute(t, "mod", "carol", until).await?,
        Some(Sanctioned::Done { was_member: true })
    );
    assert_eq!(s.standing(t, "mod", "carol").await?.muted, Some(until));
    let forever = Mute { until: None };
    s.mute(t, "mod", "carol", forever).await?;
    assert_eq!(s.standing(t, "mod", "carol").await?.muted, Some(forever));
    assert!(s.remove_member(t, "mod", "carol").await?);
    assert_eq!(s.add_member(t, "mod", "carol", 10).await?, Added::Added);
    assert_eq!(s.standing(t, "mod", "carol").await?.muted, Some(forever));
    assert!(s.unmute(t, "mod", "carol").await?);
    assert!(!s.unmute(t, "mod", "carol").await?);
    assert_eq!(s.standing(t, "mod", "carol").await?.muted, None);

    // Bans: membership, room slot and role go at once; joining is refused until unbanned.
    s.set_moderator(t, "mod", "bob", true).await?;
    assert_eq!(
        s.ban(t, "mod", "bob").await?,
        Sanctioned::Done { was_member: true }
    );
    assert_eq!(
        s.standing(t, "mod", "bob").await?,
        standing(false, false, true, None)
    );
    assert!(!s.rooms_of(t, "bob").await?.contains(&"mod".to_owned()));
    assert_eq!(s.add_member(t, "mod", "bob", 10).await?, Added::Banned);
    assert!(!s.is_member(t, "mod", "bob").await?);
    assert_eq!(
        s.ban(t, "mod", "bob").await?,
        Sanctioned::Done { was_member: false }
    );
    assert_eq!(
        s.ban(t, "mod", "stranger").await?,
        Sanctioned::Done { was_member: false }
    );
    assert_eq!(s.add_member(t, "mod", "stranger", 10).await?, Added::Banned);
    assert!(s.unban(t, "mod", "bob").await?);
    assert!(!s.unban(t, "mod", "bob").await?);
    assert_eq!(s.add_member(t, "mod", "bob", 10).await?, Added::Added);
    assert!(!s.standing(t, "mod", "bob").await?.moderator);

    // Slow mode: on the room record; one pass per interval per member.
    let r = s.set_slow_mode(t, "mod", 30).await?.expect("room");
    assert_eq!(r.slow_mode_s, 30);
    assert_eq!(s.get(t, "mod").await?.map(|r| r.slow_mode_s), Some(30));
    assert_eq!(s.set_slow_mode(t, "none", 30).await?, None);
    assert_eq!(s.get(t, "none").await?, None, "not created by slow mode");
    assert!(s.slow_mode_pass(t, "mod", "carol", 30_000, 1_000).await?);
    assert!(!s.slow_mode_pass(t, "mod", "carol", 30_000, 30_999).await?);
    assert!(s.slow_mode_pass(t, "mod", "alice", 30_000, 30_999).await?);
    assert!(s.slow_mode_pass(t, "mod", "carol", 30_000, 31_000).await?);
    assert!(!s.slow_mode_pass(t, "mod", "carol", 30_000, 31_001).await?);

    // Nothing crosses tenants.
    assert_eq!(s.standing(u, "mod", "carol").await?, Standing::default());
    assert_eq!(s.add_member(u, "mod", "stranger", 10).await?, Added::Added);
    assert!(s.slow_mode_pass(u, "mod", "carol", 30_000, 1_001).await?);
    assert!(!s.unban(u, "mod", "stranger").await?);

    // Deletion takes roles, bans, mutes and slow-mode state with it.
    s.set_moderator(t, "mod", "carol", true).await?;
    s.mute(t, "mod", "alice", forever).await?;
    assert!(s.delete(t, "mod").await?.is_some());
    assert_eq!(
        s.create(t, &room("mod", "Again"), ANY).await?,
        Created::Created
    );
    assert_eq!(s.get(t, "mod").await?.map(|r| r.slow_mode_s), Some(0));
    for user in ["stranger", "carol", "alice"] {
        assert_eq!(s.add_member(t, "mod", user, 10).await?, Added::Added);
        assert_eq!(
            s.standing(t, "mod", user).await?,
            standing(true, false, false, None),
            "{user}"
        );
    }
    assert!(s.slow_mode_pass(t, "mod", "carol", 30_000, 31_002).await?);
    Ok(())
}

// === sync change index ===

fn page_ids(c: &Changed) -> Vec<&str> {
    c.rooms.iter().map(|(r, _)| r.as_str()).collect()
}

/// Room stamps and a user's own stamps: the user's rooms changed after a stamp, in stamp
/// order, paged; forgotten entries and other tenants stay out.
async fn changes_conform(s: &dyn ChangeIndex, t: &str, u: &str) -> Result<()> {
    let mine = strings(&["a", "b", "c", "d"]);
    assert_eq!(
        s.changed(t, "alice", &mine, 0, 10).await?,
        Changed::default()
    );
    assert_eq!(s.changed(t, "alice", &[], 0, 10).await?, Changed::default());
    s.touch_room(t, "b").await?;
    s.touch_user(t, "alice", "d").await?;
    s.touch_room(t, "a").await?;
    s.touch_room(t, "elsewhere").await?;
    s.touch_user(t, "bob", "c").await?;
    let all = s.changed(t, "alice", &mine, 0, 10).await?;
    assert_eq!(page_ids(&all), vec!["b", "d", "a"]);
    assert!(!all.more);
    let stamps: Vec<u64> = all.rooms.iter().map(|(_, s)| *s).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");

    // Pages: nothing missed, nothing repeated; a room changed again comes again, later.
    let one = s.changed(t, "alice", &mine, 0, 2).await?;
    assert_eq!(page_ids(&one), vec!["b", "d"]);
    assert!(one.more);
    s.touch_room(t, "b").await?;
    let two = s.changed(t, "alice", &mine, one.cursor(0), 2).await?;
    assert_eq!(page_ids(&two), vec!["a", "b"]);
    assert!(!two.more);
    let end = two.cursor(one.cursor(0));
    assert_eq!(
        s.changed(t, "alice", &mine, end, 2).await?,
        Changed::default()
    );
    // The user's own stamp and the room's: the later counts.
    s.touch_user(t, "alice", "b").await?;
    s.touch_room(t, "d").await?;
    let again = s.changed(t, "alice", &mine, end, 10).await?;
    assert_eq!(page_ids(&again), vec!["b", "d"]);
    // Only the rooms asked about (the user's) are looked at.
    let some = s.changed(t, "alice", &strings(&["a"]), 0, 10).await?;
    assert_eq!(page_ids(&some), vec!["a"]);

    // Forgetting: a user's entry, then a whole room with its members' entries.
    s.forget_user_room(t, "alice", "d").await?;
    s.touch_user(t, "alice", "c").await?;
    s.forget_room(t, "c", &strings(&["alice", "bob"])).await?;
    let left = s.changed(t, "alice", &mine, 0, 10).await?;
    assert_eq!(page_ids(&left), vec!["a", "b", "d"], "d's room stamp stays");
    assert!(
        s.changed(t, "bob", &strings(&["c"]), 0, 10)
            .await?
            .rooms
            .is_empty()
    );

    // Nothing crosses tenants; each tenant stamps on its own.
    assert_eq!(
        s.changed(u, "alice", &mine, 0, 10).await?,
        Changed::default()
    );
    s.touch_room(u, "a").await?;
    let theirs = s.changed(u, "alice", &mine, 0, 10).await?;
    assert_eq!(theirs.rooms, vec![("a".to_owned(), 1)]);
    Ok(())
}

// === history ===

fn message(room: &str, sender: &str, body: &str, client_msg_id: Option<&str>) -> Message {
    Message {
        id: format!("id-{sender}-{body}"),
        room_id: room.into(),
        seq: 999, // ignored by append
        sender_id: sender.into(),
        body: body.into(),
        ts: 1_700_000_000_123,
        client_msg_id: client_msg_id.map(Into::into),
        ..Message::default()
    }
}

/// How long the stores of the retention tests keep messages: short, as the read path is
/// tested by letting stored messages age.
const AGE_MS: i64 = 1000;

/// History retention by age (`chat.history_max_age`): messages that aged past the limit
/// after they were stored are gone from every read (pages in both directions, single
/// reads, last messages, edits), their `client_msg_id` no longer de-duplicates, and what
/// is younger stays; another tenant's room of the same id is untouched. Returns the
/// messages kept.
async fn history_age_conform(s: &dyn MessageStore, t: &str, u: &str) -> Result<Vec<Message>> {
    let now = now_ms();
    // 1..=3 just young enough to be stored; 4..=5 (and the other tenant's) young for long.
    for i in 1..=5_i64 {
        let mut m = message("aged", "alice", &format!("m{i}"), Some(&format!("c{i}")));
        m.ts = if i <= 3 {
            now - AGE_MS + 300
        } else {
            now + 60_000
        };
        assert_eq!(s.append(t, m, 1000).await?.message.seq, i as u64);
    }
    let mut theirs = message("aged", "alice", "theirs", Some("c1"));
    theirs.ts = now - AGE_MS + 300;
    s.append(u, theirs, 1000).await?;
    assert_eq!(
        seqs(&s.page(t, "aged", newest(100)).await?),
        [1, 2, 3, 4, 5]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Read without any write since: the aged ones are gone from every read.
    assert_eq!(seqs(&s.page(t, "aged", newest(100)).await?), [4, 5]);
    let oldest_two = Page {
        before: None,
        after: Some(0),
        limit: 2,
    };
    assert_eq!(
        seqs(&s.page(t, "aged", oldest_two).await?),
        [4, 5],
        "a page from the start is not cut short by what aged"
    );
    assert_eq!(s.get(t, "aged", 2).await?, None);
    assert!(s.get(t, "aged", 4).await?.is_some());
    assert_eq!(
        s.update(t, "aged", 1, &react("bob", "👍", true)).await?,
        Err(Refusal::NotFound)
    );
    assert_eq!(s.last_seqs(t, &strings(&["aged"])).await?, [5]);
    // A room whose messages all aged has no last message.
    let mut lone = message("lone", "alice", "old", None);
    lone.ts = now_ms() - AGE_MS + 300;
    s.append(t, lone, 1000).await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let last = s.last_messages(t, &strings(&["aged", "lone"])).await?;
    assert_eq!(last[0].as_ref().map(|m| m.seq), Some(5));
    assert_eq!(last[1], None);

    // A client_msg_id of an aged message starts a new message.
    let mut retry = message("aged", "alice", "m1", Some("c1"));
    retry.ts = now_ms();
    let again = s.append(t, retry, 1000).await?;
    assert!(!again.duplicate);
    assert_eq!(again.message.seq, 6);
    // The other tenant's room aged too, on its own: its message is gone, not ours.
    assert_eq!(
        seqs(&s.page(u, "aged", newest(100)).await?),
        Vec::<u64>::new()
    );
    let kept = s.page(t, "aged", newest(100)).await?;
    assert_eq!(seqs(&kept), [4, 5, 6]);
    Ok(kept)
}

/// Idempotency keys expire (`chat.idempotency_ttl`): a retry within the TTL returns the
/// first message, one after it is a new message; per tenant.
async fn history_idempotency_conform(s: &dyn MessageStore, t: &str, u: &str) -> Result<()> {
    let first = s
        .append(t, message("idem", "alice", "hi", Some("k")), 1000)
        .await?;
    let retry = s
        .append(t, message("idem", "alice", "hi", Some("k")), 1000)
        .await?;
    assert!(retry.duplicate, "a retry inside the window dedups");
    assert_eq!(retry.message, first.message);
    let theirs = s
        .append(u, message("idem", "alice", "hi", Some("k")), 1000)
        .await?;
    assert!(!theirs.duplicate, "another tenant's key is its own");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let late = s
        .append(t, message("idem", "alice", "hi", Some("k")), 1000)
        .await?;
    assert!(!late.duplicate, "the key expired");
    assert_eq!(late.message.seq, 2);
    let retry = s
        .append(t, message("idem", "alice", "hi", Some("k")), 1000)
        .await?;
    assert!(retry.duplicate, "the new message has a key of its own");
    assert_eq!(retry.message.seq, 2);
    Ok(())
}

fn retention(max_age_ms: Option<i64>, idempotency_ttl_ms: i64) -> Retention {
    Retention {
        max_age_ms,
        idempotency_ttl_ms,
    }
}

#[tokio::test]
async fn history_age_memory() -> Result<()> {
    let (a, b) = tenants();
    let s = MemoryHistory::with_retention(retention(Some(AGE_MS), 60_000));
    history_age_conform(&s, &a, &b).await.map(drop)
}

#[tokio::test]
async fn history_age_redis() -> Result<()> {
    let Some(client) = redis().await? else {
        return Ok(());
    };
    let (a, b) = tenants();
    let s = RedisHistory::new(client.clone()).with_retention(retention(Some(AGE_MS), 60_000));
    history_age_conform(&s, &a, &b).await?;
    // Storage holds no more than the reads show: the stream was trimmed.
    let len: u64 = client.xlen(format!("sb:{{{a}}}:room:aged:log")).await?;
    assert_eq!(len, 3);
    assert_keys_tagged(&client, &[&a, &b]).await?;
    client.quit().await?;
    Ok(())
}

#[tokio::test]
async fn history_idempotency_memory() -> Result<()> {
    let (a, b) = tenants();
    let s = MemoryHistory::with_retention(retention(None, 1000));
    history_idempotency_conform(&s, &a, &b).await
}

#[tokio::test]
async fn history_idempotency_redis() -> Result<()> {
    let Some(client) = redis().await? else {
        return Ok(());
    };
    let (a, b) = tenants();
    let s = RedisHistory::new(client.clone()).with_retention(retention(None, 1000));
    history_idempotency_conform(&s, &a, &b).await?;
    // The key carries its TTL in Redis.
    let ttl: i64 = client
        .pttl(format!("sb:{{{a}}}:room:idem:cmid:alice:k"))
        .await?;
    assert!((1..=1000).contains(&ttl), "pttl {ttl}");
    client.quit().await?;
    Ok(())
}

fn seqs(v: &[Message]) -> Vec<u64> {
    v.iter().map(|m| m.seq).collect()
}

fn newest(limit: usize) -> Page {
    Page {
        before: None,
        after: None,
        limit,
    }
}

async fn history_conform(s: &dyn MessageStore, t: &str, u: &str) -> Result<()> {
    // Seq rises by one; the stored message is what was sent with its seq.
    let mut log = Vec::new();
    for i in 1..=10_u64 {
        let mut m = message("general", "alice", &format!("hello {i}"), None);
        if i == 4 {
            m.reply_to = Some(2);
            m.meta = Some(json!({
                "big": u64::MAX, "min": i64::MIN, "f": 0.1, "e": 1e300,
                "nested": {"seq": 0, "s": "\"seq\":0"}, "list": [1, -2, 3.5]
            }));
            m.body = "quotes \" and \\ and \u{1F600} and \"seq\":0".into();
        }
        let a = s.append(t, m.clone(), 1000).await?;
        assert!(!a.duplicate);
        assert_eq!(a.message.seq, i);
        m.seq = i;
        assert_eq!(a.message, m);
        log.push(a.message);
    }
    assert_eq!(s.page(t, "general", newest(100)).await?, log);

    // Pages match `select_page` over the whole log, in both directions.
    let bounds: Vec<Option<u64>> = std::iter::once(None).chain((0..=12).map(Some)).collect();
    for &before in &bounds {
        for &after in &bounds {
            for limit in [0, 1, 3, 20, usize::MAX] {
                let p = Page {
                    before,
                    after,
                    limit,
                };
                assert_eq!(
                    s.page(t, "general", p).await?,
                    select_page(log.iter(), p),
                    "{p:?}"
                );
            }
        }
    }
    assert_eq!(
        seqs(&s.page(t, "general", newest(3)).await?),
        vec![8, 9, 10]
    );
    assert_eq!(s.page(t, "nope", newest(3)).await?, Vec::<Message>::new());

    // Last seqs.
    let rooms = strings(&["general", "nope"]);
    assert_eq!(s.last_seqs(t, &rooms).await?, vec![10, 0]);
    assert_eq!(s.last_seqs(t, &[]).await?, Vec::<u64>::new());

    // Another tenant's room of the same id has its own log and seqs.
    assert_eq!(s.last_seqs(u, &rooms).await?, vec![0, 0]);
    assert_eq!(
        s.page(u, "general", newest(10)).await?,
        Vec::<Message>::new()
    );
    let theirs = s
        .append(u, message("general", "alice", "theirs", None), 1000)
        .await?;
    assert_eq!(theirs.message.seq, 1);
    assert_eq!(s.last_seqs(t, &rooms).await?, vec![10, 0]);
    assert_eq!(s.last_seqs(u, &rooms).await?, vec![1, 0]);
    assert_eq!(s.page(t, "general", newest(100)).await?, log);

    // A repeated client_msg_id from the same sender returns the first message.
    let first = s
        .append(t, message("idem", "alice", "one", Some("c1")), 1000)
        .await?;
    assert!(!first.duplicate);
    assert_eq!(first.message.seq, 1);
    let again = s
        .append(t, message("idem", "alice", "two", Some("c1")), 1000)
        .await?;
    assert!(again.duplicate);
    assert_eq!(again.message, first.message);
    // ... but another sender's same client_msg_id is another message,
    let bob = s
        .append(t, message("idem", "bob", "three", Some("c1")), 1000)
        .await?;
    assert!(!bob.duplicate);
    assert_eq!(bob.message.seq, 2);
    // ... as is the same one in another tenant.
    let other = s
        .append(u, message("idem", "alice", "four", Some("c1")), 1000)
        .await?;
    assert!(!other.duplicate);
    assert_eq!(other.message.seq, 1);
    assert_eq!(s.last_seqs(t, &strings(&["idem"])).await?, vec![2]);
    assert_eq!(seqs(&s.page(t, "idem", newest(10)).await?), vec![1, 2]);
    // Any client_msg_id text is matched exactly (quotes, escapes, non-ASCII).
    let odd = "q\"u\\o/te \u{e9} \u{1F389} \u{1}";
    let one = s
        .append(t, message("odd", "alice", "one", Some(odd)), 1000)
        .await?;
    let two = s
        .append(t, message("odd", "alice", "two", Some(odd)), 1000)
        .await?;
    assert!(two.duplicate);
    assert_eq!(two.message, one.message);

    // Trimming to max_len; a trimmed message's client_msg_id is forgotten with it.
    for i in 1..=5 {
        let a = s
            .append(
                t,
                message("trim", "alice", &format!("t{i}"), Some(&format!("k{i}"))),
                3,
            )
            .await?;
        assert_eq!(a.message.seq, i);
    }
    assert_eq!(seqs(&s.page(t, "trim", newest(100)).await?), vec![3, 4, 5]);
    let kept = s
        .append(t, message("trim", "alice", "again", Some("k5")), 3)
        .await?;
    assert!(kept.duplicate);
    assert_eq!(kept.message.seq, 5);
    assert_eq!(kept.message.body, "t5");
    let renewed = s
        .append(t, message("trim", "alice", "again", Some("k1")), 3)
        .await?;
    assert!(!renewed.duplicate);
    assert_eq!(renewed.message.seq, 6);
    assert_eq!(seqs(&s.page(t, "trim", newest(100)).await?), vec![4, 5, 6]);
    let before_5 = Page {
        before: Some(5),
        after: None,
        limit: 10,
    };
    assert_eq!(seqs(&s.page(t, "trim", before_5).await?), vec![4]);
    let after_1 = Page {
        before: None,
        after: Some(1),
        limit: 2,
    };
    assert_eq!(seqs(&s.page(t, "trim", after_1).await?), vec![4, 5]);
    assert_eq!(s.last_seqs(t, &strings(&["trim"])).await?, vec![6]);
    Ok(())
}

fn edit(user: &str, body: &str, now: i64) -> Change {
    Change::Edit {
        user: user.into(),
        body: body.into(),
        meta: None,
        now,
        window_ms: 60_000,
        max_edits: 2,
    }
}

fn react(user: &str, emoji: &str, on: bool) -> Change {
    Change::React {
        user: user.into(),
        emoji: emoji.into(),
        on,
    }
}

/// Edits, tombstones and reactions: history serves the current version, seq and last
/// seq never move, and nothing crosses tenants or outlives its room.
async fn history_changes_conform(s: &dyn MessageStore, t: &str, u: &str) -> Result<()> {
    const TS: i64 = 1_700_000_000_123;
    for i in 1..=3 {
        s.append(
            t,
            message("c", "alice", &format!("m{i}"), Some(&format!("k{i}"))),
            1000,
        )
        .await?;
    }
    s.append(u, message("c", "alice", "theirs", None), 1000)
        .await?;

    // Edit by the sender: body, edited_at and edit_count change; seq does not.
    let e = s
        .update(t, "c", 2, &edit("alice", "m2 fixed", TS + 5))
        .await?;
    let e = e.map_err(|r| anyhow::anyhow!("{r}"))?;
    assert!(e.changed);
    assert_eq!(
        (
            e.message.seq,
            e.message.body.as_str(),
            e.message.edited_at,
            e.message.edit_count
        ),
        (2, "m2 fixed", Some(TS + 5), 1)
    );
    assert_eq!(
        s.update(t, "c", 2, &edit("bob", "hijack", TS)).await?,
        Err(Refusal::NotSender)
    );
    assert_eq!(
        s.update(t, "c", 2, &edit("alice", "late", TS + 60_001))
            .await?,
        Err(Refusal::WindowClosed)
    );
    s.update(t, "c", 2, &edit("alice", "m2 again", TS + 6))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    assert_eq!(
        s.update(t, "c", 2, &edit("alice", "third", TS + 7)).await?,
        Err(Refusal::TooManyEdits(2))
    );
    assert_eq!(
        s.update(t, "c", 9, &edit("alice", "x", TS)).await?,
        Err(Refusal::NotFound)
    );
    assert_eq!(
        s.update(t, "none", 1, &edit("alice", "x", TS)).await?,
        Err(Refusal::NotFound)
    );
    // A repeated client_msg_id returns the current version.
    let dup = s
        .append(t, message("c", "alice", "resend", Some("k2")), 1000)
        .await?;
    assert!(dup.duplicate);
    assert_eq!(dup.message.body, "m2 again");

    // Reactions: idempotent, aggregated, returned with history.
    let r = s
        .update(t, "c", 1, &react("bob", "👍", true))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    assert!(r.changed);
    let r = s
        .update(t, "c", 1, &react("bob", "👍", true))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    assert!(!r.changed);
    s.update(t, "c", 1, &react("carol", "👍", true))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    let r = s
        .update(t, "c", 1, &react("carol", "🎉", true))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    let expected = vec![
        Reaction {
            emoji: "👍".into(),
            count: 2,
            user_ids: strings(&["bob", "carol"]),
        },
        Reaction {
            emoji: "🎉".into(),
            count: 1,
            user_ids: strings(&["carol"]),
        },
    ];
    assert_eq!(r.message.reactions, expected);
    s.update(t, "c", 2, &react("bob", "👀", true))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    let page = s.page(t, "c", newest(10)).await?;
    assert_eq!(seqs(&page), vec![1, 2, 3]);
    assert_eq!(page[0].reactions, expected);
    assert_eq!(page[0].body, "m1");
    assert_eq!(page[1].body, "m2 again");
    assert_eq!(page[1].edit_count, 2);
    assert_eq!(page[1].reactions.len(), 1);
    assert!(page[2].reactions.is_empty() && page[2].edited_at.is_none());

    // Delete by a stranger is refused; by the owner (decided by the caller) a tombstone.
    let del = |user: &str, by_moderator| Change::Delete {
        user: user.into(),
        by_moderator,
        now: TS + 9,
    };
    assert_eq!(
        s.update(t, "c", 2, &del("bob", false)).await?,
        Err(Refusal::NotSenderOrModerator)
    );
    let d = s
        .update(t, "c", 2, &del("bob", true))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    assert!(d.message.deleted && d.message.body.is_empty() && d.message.reactions.is_empty());
    assert_eq!(
        s.update(t, "c", 2, &react("bob", "👀", true)).await?,
        Err(Refusal::Deleted)
    );
    assert_eq!(
        s.update(t, "c", 2, &edit("alice", "back", TS)).await?,
        Err(Refusal::Deleted)
    );
    let page = s.page(t, "c", newest(10)).await?;
    assert_eq!(seqs(&page), vec![1, 2, 3], "a tombstone keeps its seq");
    assert!(page[1].deleted && page[1].body.is_empty() && page[1].reactions.is_empty());
    assert_eq!(page[1].id, d.message.id);
    assert_eq!(
        s.last_seqs(t, &strings(&["c"])).await?,
        vec![3],
        "last seq never moves"
    );
    let page = s.page(t, "c", newest(10)).await?;

    // The last message of each room, in its current version (what sync:get shows).
    s.update(t, "c", 3, &react("bob", "🎉", true))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    let last = s.last_messages(t, &strings(&["c", "none"])).await?;
    assert_eq!(last.len(), 2);
    assert_eq!(last[1], None);
    assert_eq!(Some(&page[2]).map(|m| m.seq), Some(3));
    let c3 = last[0].clone().expect("room c has messages");
    assert_eq!((c3.seq, c3.body.as_str()), (3, "m3"));
    assert_eq!(c3.reactions.len(), 1);
    assert_eq!(
        s.last_messages(t, &[]).await?,
        Vec::<Option<Message>>::new()
    );
    s.append(t, message("c", "alice", "bye", None), 1000)
        .await?;
    s.update(t, "c", 4, &del("alice", false))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    let tomb = s.last_messages(t, &strings(&["c"])).await?;
    assert!(tomb[0].as_ref().is_some_and(|m| m.seq == 4 && m.deleted));
    assert_eq!(
        s.last_messages(u, &strings(&["c"])).await?[0]
            .as_ref()
            .map(|m| m.body.as_str()),
        Some("theirs")
    );

    // The other tenant's room "c" is untouched, and their changes stay theirs.
    let theirs = s.page(u, "c", newest(10)).await?;
    assert_eq!(theirs.len(), 1);
    assert!(theirs[0].reactions.is_empty() && theirs[0].edited_at.is_none());
    assert_eq!(
        s.update(u, "c", 2, &react("bob", "👍", true)).await?,
        Err(Refusal::NotFound)
    );

    // Trimming takes edits and reactions with the messages.
    for i in 1..=3 {
        s.append(t, message("tr", "alice", &format!("x{i}"), None), 2)
            .await?;
    }
    s.update(t, "tr", 2, &react("bob", "👍", true))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    s.update(t, "tr", 3, &edit("alice", "x3 edited", TS))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    for i in 4..=6 {
        s.append(t, message("tr", "alice", &format!("x{i}"), None), 2)
            .await?;
    }
    let page = s.page(t, "tr", newest(10)).await?;
    assert_eq!(seqs(&page), vec![5, 6]);
    assert!(
        page.iter()
            .all(|m| m.reactions.is_empty() && m.edited_at.is_none())
    );
    assert_eq!(
        s.update(t, "tr", 2, &react("bob", "👍", true)).await?,
        Err(Refusal::NotFound)
    );

    // Deleting the room forgets its log, seq, edits and reactions; a new room of that id
    // starts at seq 1, and an old client_msg_id does not bring back an old message.
    s.delete_room(t, "c").await?;
    assert_eq!(s.page(t, "c", newest(10)).await?, Vec::<Message>::new());
    assert_eq!(s.last_seqs(t, &strings(&["c"])).await?, vec![0]);
    assert_eq!(
        s.update(t, "c", 1, &react("bob", "👍", true)).await?,
        Err(Refusal::NotFound)
    );
    let fresh = s
        .append(t, message("c", "zed", "new room", Some("k1")), 1000)
        .await?;
    assert!(!fresh.duplicate);
    assert_eq!(fresh.message.seq, 1);
    let again = s
        .append(t, message("c", "alice", "hello again", Some("k1")), 1000)
        .await?;
    assert!(
        !again.duplicate,
        "the old k1 pointed at seq 1 of the deleted room"
    );
    assert_eq!(again.message.seq, 2);
    assert_eq!(s.page(t, "c", newest(10)).await?.len(), 2);
    assert_eq!(s.page(u, "c", newest(10)).await?.len(), 1);
    Ok(())
}

fn reply(room: &str, sender: &str, body: &str, root: u64) -> Message {
    Message {
        thread_root: Some(root),
        ..message(room, sender, body, None)
    }
}

/// Threads: replies take room seqs, page by seq within their thread, roots count them,
/// trimming and room deletion take them along; nothing crosses tenants.
async fn history_threads_conform(s: &dyn MessageStore, t: &str, u: &str) -> Result<()> {
    s.append(t, message("th", "alice", "root one", None), 1000)
        .await?; // 1
    s.append(t, message("th", "alice", "root two", None), 1000)
        .await?; // 2
    let mut replies = Vec::new();
    for i in 0..5 {
        // 3..7 into the thread of 1, 8 into the thread of 2
        replies.push(
            s.append(t, reply("th", "bob", &format!("r{i}"), 1), 1000)
                .await?
                .message,
        );
    }
    let other = s.append(t, reply("th", "carol", "in two", 2), 1000).await?;
    assert_eq!(seqs(&replies), vec![3, 4, 5, 6, 7]);
    assert_eq!(other.message.seq, 8);
    assert_eq!(other.message.thread_root, Some(2));
    assert_eq!(s.last_seqs(t, &strings(&["th"])).await?, vec![8]);

    assert_eq!(
        seqs(&s.thread(t, "th", 1, 0, 100).await?),
        vec![3, 4, 5, 6, 7]
    );
    assert_eq!(seqs(&s.thread(t, "th", 1, 4, 2).await?), vec![5, 6]);
    assert_eq!(seqs(&s.thread(t, "th", 1, 7, 10).await?), Vec::<u64>::new());
    assert_eq!(seqs(&s.thread(t, "th", 2, 0, 10).await?), vec![8]);
    assert_eq!(seqs(&s.thread(t, "th", 3, 0, 10).await?), Vec::<u64>::new());
    assert_eq!(s.thread(t, "th", 1, 0, 0).await?, Vec::<Message>::new());
    let page = s.page(t, "th", newest(100)).await?;
    assert_eq!(
        page.iter().map(|m| m.thread_replies).collect::<Vec<_>>(),
        vec![5, 1, 0, 0, 0, 0, 0, 0]
    );
    let root = s.get(t, "th", 1).await?.expect("root");
    assert_eq!((root.body.as_str(), root.thread_replies), ("root one", 5));
    assert_eq!(
        s.get(t, "th", 4).await?.map(|m| m.thread_root),
        Some(Some(1))
    );
    assert_eq!(s.get(t, "th", 99).await?, None);
    assert_eq!(s.get(t, "th", 0).await?, None);

    // Edits and reactions show in the thread; an edit of the root keeps its count.
    let e = s
        .update(t, "th", 4, &edit("bob", "r1 edited", 1_700_000_000_200))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    assert_eq!(e.message.thread_root, Some(1));
    s.update(t, "th", 5, &react("alice", "👍", true))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    let th = s.thread(t, "th", 1, 3, 2).await?;
    assert_eq!(th[0].body, "r1 edited");
    assert_eq!(th[1].reactions.len(), 1);
    let r = s
        .update(t, "th", 1, &react("bob", "👀", true))
        .await?
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    assert_eq!(r.message.thread_replies, 5);

    // Another tenant's room "th" has no threads.
    assert_eq!(s.thread(u, "th", 1, 0, 100).await?, Vec::<Message>::new());
    s.append(u, message("th", "alice", "theirs", None), 1000)
        .await?;
    assert_eq!(s.get(u, "th", 1).await?.map(|m| m.thread_replies), Some(0));

    // Trimming a root takes its thread (the replies kept in the log stay messages).
    for i in 0..3 {
        s.append(t, message("tt", "alice", &format!("root{i}"), None), 4)
            .await?; // 1..3
    }
    s.append(t, reply("tt", "bob", "a", 2), 4).await?; // 4: log 1..4
    s.append(t, reply("tt", "bob", "b", 3), 4).await?; // 5: log 2..5
    assert_eq!(seqs(&s.thread(t, "tt", 2, 0, 10).await?), vec![4]);
    assert_eq!(seqs(&s.thread(t, "tt", 3, 0, 10).await?), vec![5]);
    for i in 0..3 {
        s.append(t, message("tt", "alice", &format!("later{i}"), None), 4)
            .await?; // 6..8: log 5..8
    }
    assert_eq!(s.thread(t, "tt", 2, 0, 10).await?, Vec::<Message>::new());
    assert_eq!(s.thread(t, "tt", 3, 0, 10).await?, Vec::<Message>::new());
    let kept = s.page(t, "tt", newest(10)).await?;
    assert_eq!(seqs(&kept), vec![5, 6, 7, 8]);
    assert_eq!(kept[0].thread_root, Some(3));

    // Room deletion takes every thread.
    s.delete_room(t, "th").await?;
    assert_eq!(s.thread(t, "th", 1, 0, 100).await?, Vec::<Message>::new());
    s.append(t, message("th", "zed", "new root", None), 1000)
        .await?;
    assert_eq!(s.get(t, "th", 1).await?.map(|m| m.thread_replies), Some(0));
    Ok(())
}

// === receipts ===

async fn receipts_conform(s: &dyn ReceiptStore, t: &str, u: &str) -> Result<()> {
    // Pointers only move forward.
    assert_eq!(s.advance(t, "alice", "general", Kind::Read, 5).await?, 5);
    assert_eq!(s.advance(t, "alice", "general", Kind::Read, 3).await?, 5);
    assert_eq!(s.advance(t, "alice", "general", Kind::Read, 12).await?, 12);
    assert_eq!(s.advance(t, "alice", "general", Kind::Read, 9).await?, 12);
    assert_eq!(
        s.advance(t, "alice", "general", Kind::Delivered, 2).await?,
        2
    );
    assert_eq!(s.advance(t, "alice", "digits", Kind::Read, 9).await?, 9);
    assert_eq!(s.advance(t, "alice", "digits", Kind::Read, 10).await?, 10);
    assert_eq!(s.advance(t, "alice", "digits", Kind::Read, 9).await?, 10);
    assert_eq!(
        s.advance(t, "alice", "big", Kind::Read, u64::MAX - 1)
            .await?,
        u64::MAX - 1
    );
    assert_eq!(
        s.advance(t, "alice", "big", Kind::Read, u64::MAX - 2)
            .await?,
        u64::MAX - 1
    );
    assert_eq!(
        s.advance(t, "alice", "big", Kind::Read, u64::MAX).await?,
        u64::MAX
    );
    assert_eq!(s.advance(t, "alice", "zero", Kind::Read, 0).await?, 0);

    let rooms = strings(&["general", "none", "big", "digits"]);
    assert_eq!(
        s.pointers(t, "alice", &rooms, Kind::Read).await?,
        vec![12, 0, u64::MAX, 10]
    );
    assert_eq!(
        s.pointers(t, "alice", &rooms, Kind::Delivered).await?,
        vec![2, 0, 0, 0]
    );
    assert_eq!(
        s.pointers(t, "alice", &[], Kind::Read).await?,
        Vec::<u64>::new()
    );
    assert_eq!(
        s.pointers(t, "bob", &rooms, Kind::Read).await?,
        vec![0, 0, 0, 0]
    );

    // Another tenant's user of the same id has their own pointers.
    assert_eq!(
        s.pointers(u, "alice", &rooms, Kind::Read).await?,
        vec![0, 0, 0, 0]
    );
    assert_eq!(s.advance(u, "alice", "general", Kind::Read, 1).await?, 1);
    assert_eq!(
        s.pointers(t, "alice", &rooms[..1], Kind::Read).await?,
        vec![12]
    );

    // Privacy round trip.
    assert_eq!(s.privacy(t, "alice").await?, Privacy::default());
    let quiet = Privacy {
        read_receipts: false,
        typing_indicators: true,
        room_adds: RoomAdds::Anyone,
    };
    s.set_privacy(t, "alice", quiet).await?;
    assert_eq!(s.privacy(t, "alice").await?, quiet);
    assert_eq!(s.privacy(t, "bob").await?, Privacy::default());
    assert_eq!(s.privacy(u, "alice").await?, Privacy::default());
    let silent = Privacy {
        read_receipts: false,
        typing_indicators: false,
        room_adds: RoomAdds::Nobody,
    };
    s.set_privacy(t, "alice", silent).await?;
    assert_eq!(s.privacy(t, "alice").await?, silent);
    s.set_privacy(u, "alice", quiet).await?;
    assert_eq!(s.privacy(t, "alice").await?, silent);

    // Forgetting a room drops both kinds of pointer of the users named, in that room.
    s.advance(t, "bob", "general", Kind::Read, 4).await?;
    s.forget_room(t, "general", &strings(&["alice", "bob", "nobody"]))
        .await?;
    let two = strings(&["general", "digits"]);
    assert_eq!(s.pointers(t, "alice", &two, Kind::Read).await?, vec![0, 10]);
    assert_eq!(
        s.pointers(t, "alice", &two, Kind::Delivered).await?,
        vec![0, 0]
    );
    assert_eq!(s.pointers(t, "bob", &two, Kind::Read).await?, vec![0, 0]);
    assert_eq!(s.pointers(u, "alice", &two, Kind::Read).await?, vec![1, 0]);
    s.forget_room(t, "general", &[]).await?;
    Ok(())
}

// === typing ===

fn typist(user: &str, name: &str, expires_at: i64) -> Typist {
    Typist {
        user_id: user.into(),
        name: name.into(),
        expires_at,
    }
}

async fn typing_conform(s: &dyn TypingStore, t: &str, u: &str) -> Result<()> {
    let bob = |exp| typist("bob", "Bob | the builder|", exp);
    let alice = |exp| typist("alice", "Alice", exp);

    // Start, refresh while typing, start of someone else.
    assert!(s.start(t, "r", bob(100), 0).await?);
    assert!(!s.start(t, "r", bob(200), 50).await?);
    assert!(s.start(t, "r", alice(150), 60).await?);
    assert_eq!(s.active(t, "r", 120).await?, vec![alice(150), bob(200)]);

    // Expire removes only what has expired at `now` (a refresh since keeps it).
    assert!(!s.expire(t, "r", "bob", 150).await?);
    assert!(s.expire(t, "r", "alice", 150).await?);
    assert!(!s.expire(t, "r", "alice", 150).await?);
    assert!(!s.expire(t, "r", "nobody", 150).await?);
    assert!(!s.expire(t, "empty", "bob", 150).await?);
    assert_eq!(s.active(t, "r", 150).await?, vec![bob(200)]);

    // A start after the indicator expired counts as new, even before it was removed.
    assert!(s.start(t, "r", alice(300), 0).await?);
    assert!(s.start(t, "r", alice(500), 300).await?);
    assert!(!s.start(t, "r", alice(600), 499).await?);

    // Stop: true only while typing.
    assert!(s.stop(t, "r", "bob", 199).await?);
    assert!(!s.stop(t, "r", "bob", 199).await?);
    assert!(!s.stop(t, "r", "nobody", 0).await?);
    assert!(s.start(t, "r", typist("dave", "Dave", 100), 0).await?);
    assert!(!s.stop(t, "r", "dave", 100).await?);
    assert_eq!(s.active(t, "r", 0).await?, vec![alice(600)]);

    // Active lists who is typing at `now`; expired entries stay until `expire`.
    assert!(s.start(t, "r", typist("carol", "Carol", 700), 0).await?);
    let carol = typist("carol", "Carol", 700);
    assert_eq!(s.active(t, "r", 650).await?, vec![carol.clone()]);
    assert_eq!(s.active(t, "r", 0).await?, vec![alice(600), carol.clone()]);
    assert!(s.expire(t, "r", "alice", 1000).await?);
    assert_eq!(s.active(t, "r", 0).await?, vec![carol]);
    assert!(!s.expire(t, "r", "carol", 699).await?);
    assert_eq!(s.active(t, "r", 700).await?, Vec::<Typist>::new());
    assert!(s.expire(t, "r", "carol", 700).await?);
    assert_eq!(s.active(t, "r", 0).await?, Vec::<Typist>::new());
    assert_eq!(s.active(t, "nope", 0).await?, Vec::<Typist>::new());

    // Another tenant's room of the same id is another room.
    assert!(s.start(t, "r", bob(1000), 0).await?);
    assert_eq!(s.active(u, "r", 0).await?, Vec::<Typist>::new());
    assert!(s.start(u, "r", bob(1000), 0).await?);
    assert!(s.stop(u, "r", "bob", 0).await?);
    assert_eq!(s.active(t, "r", 0).await?, vec![bob(1000)]);
    assert!(!s.expire(u, "r", "bob", 2000).await?);
    assert_eq!(s.active(t, "r", 0).await?, vec![bob(1000)]);

    // Clearing a room forgets who typed there, in that tenant only.
    assert!(s.start(u, "r", bob(1000), 0).await?);
    s.clear_room(t, "r").await?;
    assert_eq!(s.active(t, "r", 0).await?, Vec::<Typist>::new());
    assert!(!s.stop(t, "r", "bob", 0).await?);
    assert_eq!(s.active(u, "r", 0).await?, vec![bob(1000)]);
    s.clear_room(t, "never").await?;
    Ok(())
}

// === online ===

async fn online_conform(s: &dyn OnlineStore, t: &str, u: &str) -> Result<()> {
    let users = strings(&["alice", "bob"]);
    assert_eq!(s.online(t, &users).await?, vec![false, false]);
    s.connect(t, "alice", "node-1/s1").await?;
    s.connect(t, "alice", "node-2/s2").await?;
    s.connect(t, "alice", "node-2/s2").await?;
    assert_eq!(s.online(t, &users).await?, vec![true, false]);
    s.disconnect(t, "alice", "node-1/s1").await?;
    assert_eq!(s.online(t, &users).await?, vec![true, false]);
    s.disconnect(t, "alice", "node-1/s1").await?;
    assert_eq!(s.online(t, &users).await?, vec![true, false]);
    s.disconnect(t, "alice", "node-2/s2").await?;
    assert_eq!(s.online(t, &users).await?, vec![false, false]);
    s.disconnect(t, "nobody", "node-1/s1").await?;
    assert_eq!(s.online(t, &[]).await?, Vec::<bool>::new());

    // Another tenant's user of the same id is someone else.
    s.connect(u, "bob", "node-1/s3").await?;
    s.connect(t, "alice", "node-1/s4").await?;
    assert_eq!(s.online(t, &users).await?, vec![true, false]);
    assert_eq!(s.online(u, &users).await?, vec![false, true]);
    s.disconnect(u, "alice", "node-1/s4").await?;
    assert_eq!(s.online(t, &users).await?, vec![true, false]);

    // A node's sweep takes its entries, of every tenant, and nobody else's.
    let (n1, n2) = (format!("{t}-n1"), format!("{t}-n2"));
    let people = strings(&["carol", "dave"]);
    s.connect(t, "carol", &format!("{n1}/a")).await?;
    s.connect(t, "dave", &format!("{n1}/b")).await?;
    s.connect(t, "dave", &format!("{n2}/c")).await?;
    s.connect(u, "carol", &format!("{n1}/d")).await?;
    s.connect(t, "erin", &format!("{n1}/e")).await?;
    s.disconnect(t, "erin", &format!("{n1}/e")).await?;
    assert_eq!(s.sweep_node(&n1).await?, 3);
    assert_eq!(s.online(t, &people).await?, vec![false, true]);
    assert_eq!(s.online(u, &people).await?, vec![false, false]);
    assert_eq!(s.sweep_node(&n1).await?, 0, "nothing left");
    assert_eq!(s.sweep_node(&n2).await?, 1);
    assert_eq!(s.online(t, &people).await?, vec![false, false]);
    Ok(())
}

// === revocations ===

fn identity(
    tenant: &str,
    user: &str,
    jti: Option<&str>,
    sid: Option<&str>,
    iat: Option<u64>,
) -> Identity {
    Identity {
        tenant: tenant.into(),
        user_id: user.into(),
        name: user.into(),
        jti: jti.map(Into::into),
        sid: sid.map(Into::into),
        iat,
        exp: 4_000_000_000,
    }
}

const TOKEN_REVOKED: Option<&str> = Some("this token was revoked");
const SESSION_REVOKED: Option<&str> = Some("this login session was revoked");
const OLDER_REVOKED: Option<&str> =
    Some("tokens of this user issued before the revocation are revoked");
const USER_REVOKED: Option<&str> = Some("tokens of this user are revoked");

async fn revocations_conform(s: &dyn RevocationStore, t: &str, u: &str) -> Result<()> {
    let ttl = Duration::from_secs(60);
    let id = |jti, sid, iat| identity(t, "alice", jti, sid, iat);
    assert_eq!(s.check(&id(Some("j1"), Some("s1"), Some(100))).await?, None);
    assert_eq!(s.check(&id(None, None, None)).await?, None);

    // By token id.
    s.revoke(t, &Target::Jti("j1".into()), ttl).await?;
    assert_eq!(
        s.check(&id(Some("j1"), Some("s1"), Some(100))).await?,
        TOKEN_REVOKED
    );
    assert_eq!(s.check(&id(Some("j2"), Some("s1"), Some(100))).await?, None);
    assert_eq!(s.check(&id(None, Some("s1"), Some(100))).await?, None);

    // By login session; the token reason comes first.
    s.revoke(t, &Target::Sid("s1".into()), ttl).await?;
    assert_eq!(
        s.check(&id(Some("j2"), Some("s1"), Some(100))).await?,
        SESSION_REVOKED
    );
    assert_eq!(s.check(&id(None, Some("s1"), None)).await?, SESSION_REVOKED);
    assert_eq!(
        s.check(&id(Some("j1"), Some("s1"), Some(100))).await?,
        TOKEN_REVOKED
    );
    assert_eq!(s.check(&id(Some("j2"), Some("s2"), Some(100))).await?, None);

    // A user's tokens issued at or before `before`; without iat, all of them.
    s.revoke(
        t,
        &Target::User {
            user_id: "alice".into(),
            before: 1000,
        },
        ttl,
    )
    .await?;
    assert_eq!(
        s.check(&id(Some("j2"), Some("s2"), Some(999))).await?,
        OLDER_REVOKED
    );
    assert_eq!(
        s.check(&id(Some("j2"), Some("s2"), Some(1000))).await?,
        OLDER_REVOKED
    );
    assert_eq!(
        s.check(&id(Some("j2"), Some("s2"), Some(1001))).await?,
        None
    );
    assert_eq!(s.check(&id(None, None, None)).await?, USER_REVOKED);
    assert_eq!(s.check(&identity(t, "bob", None, None, None)).await?, None);

    // A later revocation of the user moves `before` on.
    s.revoke(
        t,
        &Target::User {
            user_id: "alice".into(),
            before: 2000,
        },
        ttl,
    )
    .await?;
    assert_eq!(s.check(&id(None, None, Some(1500))).await?, OLDER_REVOKED);
    assert_eq!(s.check(&id(None, None, Some(2001))).await?, None);

    // Nothing crosses tenants.
    let theirs = |jti, sid, iat| identity(u, "alice", jti, sid, iat);
    assert_eq!(
        s.check(&theirs(Some("j1"), Some("s1"), Some(5))).await?,
        None
    );
    assert_eq!(s.check(&theirs(None, None, None)).await?, None);
    s.revoke(u, &Target::Jti("j9".into()), ttl).await?;
    assert_eq!(s.check(&id(Some("j9"), None, Some(3000))).await?, None);
    assert_eq!(
        s.check(&theirs(Some("j9"), None, Some(3000))).await?,
        TOKEN_REVOKED
    );

    // Entries go after their TTL.
    let short = Duration::from_millis(50);
    s.revoke(t, &Target::Jti("brief".into()), short).await?;
    s.revoke(t, &Target::Sid("brief".into()), short).await?;
    s.revoke(
        t,
        &Target::User {
            user_id: "carol".into(),
            before: 10,
        },
        short,
    )
    .await?;
    let carol = identity(t, "carol", Some("brief"), Some("brief"), Some(5));
    assert_eq!(s.check(&carol).await?, TOKEN_REVOKED);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(s.check(&carol).await?, None);
    Ok(())
}

// === Redis only ===

/// A second user revocation never narrows an earlier one: the larger `before` and the
/// longer TTL stay.
#[tokio::test]
async fn redis_user_revocations_keep_the_widest() -> Result<()> {
    let Some(client) = redis().await? else {
        return Ok(());
    };
    let (t, _) = tenants();
    let s = RedisRevocations::new(client.clone());
    let dave = |before| Target::User {
        user_id: "dave".into(),
        before,
    };
    s.revoke(&t, &dave(20), Duration::from_secs(600)).await?;
    s.revoke(&t, &dave(10), Duration::from_secs(1)).await?;
    assert_eq!(
        s.check(&identity(&t, "dave", None, None, Some(15))).await?,
        OLDER_REVOKED
    );
    let key = format!("sb:{{{t}}}:revoked:user:dave");
    let stored: String = client.get(&key).await?;
    assert_eq!(stored, "20");
    let ttl: i64 = client.pttl(&key).await?;
    assert!(ttl > 500_000, "ttl {ttl}");
    client.quit().await?;
    Ok(())
}

fn is_corrupt<T>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Corrupt(_)))
}

/// Corrupt stored data is reported as such, not as an outage or a panic.
#[tokio::test]
async fn redis_corrupt_data_is_reported() -> Result<()> {
    let Some(client) = redis().await? else {
        return Ok(());
    };
    let (t, _) = tenants();
    let _: () = client
        .hset(
            format!("sb:{{{t}}}:user:alice:receipts:read"),
            ("general", "x1"),
        )
        .await?;
    let receipts = RedisReceipts::new(client.clone());
    assert!(is_corrupt(
        receipts
            .advance(&t, "alice", "general", Kind::Read, 5)
            .await
    ));
    assert!(is_corrupt(
        receipts
            .pointers(&t, "alice", &strings(&["general"]), Kind::Read)
            .await
            .map(|_| ())
    ));

    let _: () = client
        .hset(format!("sb:{{{t}}}:room:r:typing"), ("bob", "soon|Bob"))
        .await?;
    let typing = RedisTyping::new(client.clone());
    assert!(is_corrupt(typing.active(&t, "r", 0).await));
    assert!(is_corrupt(typing.stop(&t, "r", "bob", 0).await));

    let _: () = client
        .set(
            format!("sb:{{{t}}}:room:general"),
            "{not json",
            None,
            None,
            false,
        )
        .await?;
    assert!(is_corrupt(
        RedisRooms::new(client.clone()).get(&t, "general").await
    ));

    let _: () = client
        .set(
            format!("sb:{{{t}}}:room:general:seq"),
            "many",
            None,
            None,
            false,
        )
        .await?;
    let history = RedisHistory::new(client.clone());
    assert!(is_corrupt(
        history.last_seqs(&t, &strings(&["general"])).await
    ));
    client.quit().await?;
    Ok(())
}

/// A room's hash expires a minute past its latest expiry, and a shorter refresh never
/// shortens it.
/// What Redis keeps beside a room's stream (edits, reactions, the thread index) is pruned
/// as the stream is trimmed, and room deletion leaves no key of the room behind.
#[tokio::test]
async fn redis_history_side_keys_stay_bounded() -> Result<()> {
    let Some(client) = redis().await? else {
        return Ok(());
    };
    let (t, _) = tenants();
    let s = RedisHistory::new(client.clone());
    let key = |k: &str| format!("sb:{{{t}}}:room:b:{k}");
    for i in 1..=40_u64 {
        let m = if i % 2 == 0 {
            reply("b", "bob", "r", i - 1)
        } else {
            message("b", "alice", "root", None)
        };
        s.append(&t, m, 4).await?;
        s.update(&t, "b", i, &react("carol", "👍", true))
            .await?
            .map_err(|r| anyhow::anyhow!("{r}"))?;
        if i % 2 == 1 {
            s.update(&t, "b", i, &edit("alice", "edited", 1_700_000_000_200))
                .await?
                .map_err(|r| anyhow::anyhow!("{r}"))?;
        }
    }
    let hlen = |k: String| {
        let c = client.clone();
        async move { c.hlen::<u64, _>(k).await }
    };
    // At most the last 4 messages (seqs 37..40) and one append's worth of stragglers.
    assert!(hlen(key("reactions")).await? <= 5);
    assert!(hlen(key("edits")).await? <= 5);
    assert!(hlen(key("thread_counts")).await? <= 3);
    let threads: u64 = client.zcard(key("threads")).await?;
    assert!(threads <= 3, "{threads} thread entries");
    s.delete_room(&t, "b").await?;
    let left: Value = client
        .eval(
            "return redis.call('KEYS', ARGV[1])",
            Vec::<String>::new(),
            vec![format!("sb:{{{t}}}:room:b:*")],
        )
        .await?;
    assert_eq!(left, Value::Array(vec![]), "keys left after delete_room");
    client.quit().await?;
    Ok(())
}

#[tokio::test]
async fn redis_typing_keys_expire() -> Result<()> {
    let Some(client) = redis().await? else {
        return Ok(());
    };
    let (t, _) = tenants();
    let s = RedisTyping::new(client.clone());
    let key = format!("sb:{{{t}}}:room:r:typing");
    assert!(s.start(&t, "r", typist("bob", "Bob", 10_000), 0).await?);
    let ttl: i64 = client.pttl(&key).await?;
    assert!((60_000..=70_000).contains(&ttl), "ttl {ttl}");
    assert!(s.start(&t, "r", typist("alice", "Alice", 100), 0).await?);
    let ttl: i64 = client.pttl(&key).await?;
    assert!(ttl > 60_000, "ttl {ttl}");
    assert!(
        s.start(&t, "r", typist("carol", "Carol", i64::MAX), i64::MIN)
            .await?
    );
    let ttl: i64 = client.pttl(&key).await?;
    assert!(ttl > 300 * 24 * 3600 * 1000, "ttl {ttl}");
    client.quit().await?;
    Ok(())
}

/// Long TTLs are written as they are (no float formatting on the way through Lua).
#[tokio::test]
async fn redis_long_revocations() -> Result<()> {
    let Some(client) = redis().await? else {
        return Ok(());
    };
    let (t, _) = tenants();
    let s = RedisRevocations::new(client.clone());
    let erin = |before| Target::User {
        user_id: "erin".into(),
        before,
    };
    s.revoke(&t, &erin(5), Duration::MAX).await?;
    s.revoke(&t, &erin(6), Duration::from_secs(1)).await?;
    s.revoke(&t, &Target::Jti("forever".into()), Duration::MAX)
        .await?;
    let ttl: i64 = client.pttl(format!("sb:{{{t}}}:revoked:user:erin")).await?;
    assert!(ttl > 3_000_000_000_000, "ttl {ttl}");
    let who = identity(&t, "erin", Some("forever"), None, Some(6));
    assert_eq!(s.check(&who).await?, TOKEN_REVOKED);
    client.quit().await?;
    Ok(())
}

/// A lost seq counter resumes after the log's last entry instead of wedging the room.
#[tokio::test]
async fn redis_lost_seq_counter_resumes() -> Result<()> {
    let Some(client) = redis().await? else {
        return Ok(());
    };
    let (t, _) = tenants();
    let s = RedisHistory::new(client.clone());
    for i in 1..=3 {
        assert_eq!(
            s.append(&t, message("r", "alice", "x", None), 100)
                .await?
                .message
                .seq,
            i
        );
    }
    let _: i64 = client.del(format!("sb:{{{t}}}:room:r:seq")).await?;
    assert_eq!(
        s.append(&t, message("r", "alice", "y", None), 100)
            .await?
            .message
            .seq,
        4
    );
    assert_eq!(s.last_seqs(&t, &strings(&["r"])).await?, vec![4]);
    client.quit().await?;
    Ok(())
}

// === calls ===

use switchboard_dataplane::calls::redis::RedisCalls;
use switchboard_dataplane::calls::{
    Call, CallStore, Commit, Media, MemoryCalls, Sample, Timer, TimerKind,
};

conformance!(
    calls_conform,
    calls_memory,
    calls_redis,
    MemoryCalls::default(),
    RedisCalls
);

async fn calls_conform(s: &dyn CallStore, t: &str, other: &str) -> Result<()> {
    let id = format!("c_{}", uuid::Uuid::new_v4().simple());
    let call = Call::direct(id.clone(), "alice", "bob", Media::Audio, 1_000);
    let both = strings(&["alice", "bob"]);
    assert_eq!(
        s.commit(t, &call, 0, &both, &[], None).await?,
        Commit::Done(1)
    );
    // Creating it again, or committing on an old version, is stale.
    assert_eq!(
        s.commit(t, &call, 0, &both, &[], None).await?,
        Commit::Stale
    );
    let (loaded, v) = s.load(t, &id).await?.expect("stored");
    assert_eq!((loaded, v), (call.clone(), 1));
    assert_eq!(s.user_call(t, "bob").await?, Some(id.clone()));
    assert_eq!(s.load(other, &id).await?, None, "tenants are walls");
    assert_eq!(s.user_call(other, "bob").await?, None);

    // Another live call cannot claim bob; another tenant's can.
    let id2 = format!("c_{}", uuid::Uuid::new_v4().simple());
    let call2 = Call::direct(id2.clone(), "carol", "bob", Media::Video, 2_000);
    let claims = strings(&["carol", "bob"]);
    assert_eq!(
        s.commit(t, &call2, 0, &claims, &[], None).await?,
        Commit::Held {
            user: "bob".into(),
            call_id: id.clone()
        }
    );
    assert_eq!(s.user_call(t, "carol").await?, None, "nothing written");
    assert_eq!(
        s.commit(other, &call2, 0, &claims, &[], None).await?,
        Commit::Done(1)
    );

    // Ending releases, and queues the history record in the outbox in the same commit;
    // then bob can be claimed again.
    let ended = call.clone().busy(3_000);
    let rec = format!("{{\"_id\":\"{id}\",\"tenant\":\"{t}\"}}");
    let mine_out = |v: Vec<(String, String)>| -> Vec<String> {
        v.into_iter()
            .filter(|(x, _)| x == t)
            .map(|(_, r)| r)
            .collect()
    };
    assert_eq!(
        s.commit(t, &ended, 1, &[], &both, Some(&rec)).await?,
        Commit::Done(2)
    );
    assert_eq!(
        s.commit(t, &ended, 1, &[], &both, Some(&rec)).await?,
        Commit::Stale
    );
    assert_eq!(s.user_call(t, "bob").await?, None);
    assert_eq!(
        mine_out(s.outbox(100_000).await?),
        vec![rec.clone()],
        "queued once"
    );
    s.outbox_done(t, &rec).await?;
    assert!(mine_out(s.outbox(100_000).await?).is_empty());
    assert_eq!(
        s.commit(t, &call2, 0, &claims, &[], None).await?,
        Commit::Done(1)
    );

    // Timers: due ones are handed out with a lease, cancelled ones are gone. Times far in
    // the past keep this check away from the timers of live nodes sharing the Redis.
    let timer = |kind, user: &str| Timer {
        tenant: t.into(),
        call_id: id.clone(),
        kind,
        user_id: user.into(),
    };
    let (ring, grace) = (
        timer(TimerKind::Ring, "bob"),
        timer(TimerKind::Grace, "alice"),
    );
    s.schedule(&ring, 100).await?;
    s.schedule(&grace, 150).await?;
    s.schedule(&grace, 5_000).await?; // rescheduled later
    let mine = |v: Vec<Timer>| -> Vec<Timer> { v.into_iter().filter(|x| x.tenant == t).collect() };
    assert_eq!(mine(s.due(200, 1_000, 100).await?), vec![ring.clone()]);
    assert!(mine(s.due(300, 1_000, 100).await?).is_empty(), "leased");
    assert_eq!(
        mine(s.due(1_300, 1_000, 100).await?),
        vec![ring.clone()],
        "lease ran out"
    );
    assert!(s.leased(&ring, 2_300).await?, "still the leased timer");
    // Rescheduled while leased: the old lease neither acts nor removes the newer timer.
    s.schedule(&ring, 7_000).await?;
    assert!(!s.leased(&ring, 2_300).await?);
    s.finish(&ring, 2_300).await?;
    assert_eq!(
        mine(s.due(7_500, 1_000, 100).await?),
        vec![grace.clone(), ring.clone()],
        "the newer timer survived"
    );
    s.finish(&ring, 8_500).await?;
    assert!(!s.leased(&ring, 8_500).await?, "finished");
    s.cancel(&grace).await?;
    assert!(!s.leased(&grace, 8_500).await?, "cancelled");
    assert!(mine(s.due(10_000, 1_000, 100).await?).is_empty());

    // Quality samples, per call and per tenant.
    let q = Sample {
        latency_ms: 10.0,
        packet_loss_percentage: 1.0,
        jitter_ms: 2.0,
        bitrate_kbps: 300.0,
    };
    s.add_sample(t, &id, &q).await?;
    s.add_sample(t, &id2, &q).await?;
    assert_eq!(s.samples(t, Some(&id)).await?, vec![q]);
    assert_eq!(s.samples(t, None).await?.len(), 2);
    assert!(s.samples(other, None).await?.is_empty());

    // Connections are counted per user across nodes.
    s.conn_up(t, "bob", "n1/a", "n1").await?;
    s.conn_up(t, "bob", "n2/b", "n2").await?;
    s.conn_up(other, "bob", "n2/c", "n2").await?;
    assert_eq!(s.conn_count(t, "bob").await?, 2);
    assert_eq!(s.conn_count(other, "bob").await?, 1);
    assert_eq!(s.conn_down(t, "bob", "n1/a", "n1").await?, 1);
    assert_eq!(s.conn_down(t, "bob", "n2/b", "n2").await?, 0);
    assert_eq!(
        s.conn_down(t, "bob", "n2/b", "n2").await?,
        0,
        "twice is harmless"
    );
    assert_eq!(s.conn_down(other, "bob", "n2/c", "n2").await?, 0);
    Ok(())
}

/// The live-call count behind `switchboard_calls_active`: a call counts from the commit
/// that makes it live until the one that ends it.
#[tokio::test]
async fn calls_memory_live_count_follows_commits() -> Result<()> {
    let (t, _) = tenants();
    let s = MemoryCalls::default();
    assert_eq!(s.live_calls(0).await?, 0);
    let call = Call::direct("c_live".into(), "alice", "bob", Media::Audio, 1_000);
    let both = strings(&["alice", "bob"]);
    s.commit(&t, &call, 0, &both, &[], None).await?;
    assert_eq!(s.live_calls(2_000).await?, 1);
    s.commit(&t, &call.clone().busy(3_000), 1, &[], &both, None)
        .await?;
    assert_eq!(s.live_calls(4_000).await?, 0);
    Ok(())
}

/// On Redis the count is cluster-wide (`sb:calls:live`, shared with every test using this
/// Redis): the call's own entry is checked, and that it counts.
#[tokio::test]
async fn calls_redis_live_index_follows_commits() -> Result<()> {
    use fred::interfaces::SortedSetsInterface;
    let Some(client) = redis().await? else {
        return Ok(());
    };
    let (t, _) = tenants();
    let s = RedisCalls::new(client.clone());
    let id = format!("c_{}", uuid::Uuid::new_v4().simple());
    let member = format!("{t}|{id}");
    let call = Call::direct(id.clone(), "alice", "bob", Media::Audio, 1_000);
    let both = strings(&["alice", "bob"]);
    let before = switchboard_dataplane::app::now_ms();
    s.commit(&t, &call, 0, &both, &[], None).await?;
    let until: Option<f64> = client.zscore("sb:calls:live", &member).await?;
    let until = until.expect("a live call is indexed") as i64;
    assert!(
        until >= before + 23 * 3_600_000,
        "kept as long as the call's keys"
    );
    assert!(s.live_calls(switchboard_dataplane::app::now_ms()).await? >= 1);
    s.commit(&t, &call.clone().busy(3_000), 1, &[], &both, None)
        .await?;
    let gone: Option<f64> = client.zscore("sb:calls:live", &member).await?;
    assert_eq!(gone, None, "an ended call leaves the index");
    client.quit().await?;
    Ok(())
}

/// A commit refreshes the TTL of every user the call still holds, with the call's.
#[tokio::test]
async fn calls_redis_commit_refreshes_holders_ttl() -> Result<()> {
    let Some(client) = redis().await? else {
        return Ok(());
    };
    let (t, _) = tenants();
    let s = RedisCalls::new(client.clone());
    let id = format!("c_{}", uuid::Uuid::new_v4().simple());
    let call = Call::direct(id.clone(), "alice", "bob", Media::Audio, 1_000);
    let both = strings(&["alice", "bob"]);
    assert_eq!(
        s.commit(&t, &call, 0, &both, &[], None).await?,
        Commit::Done(1)
    );
    let user_key = format!("sb:{{{t}}}:user:bob:call");
    let _: i64 = client.pexpire(&user_key, 5_000, None).await?;
    let mut moved = call.clone();
    moved.created_at += 1;
    assert_eq!(
        s.commit(&t, &moved, 1, &[], &[], None).await?,
        Commit::Done(2)
    );
    let ttl: i64 = client.pttl(&user_key).await?;
    assert!(
        ttl > 3_600_000,
        "user key TTL refreshed with the call's: {ttl}"
    );
    // A holder key naming an ended call does not hold; one naming a live call does.
    let ended = moved.clone().busy(2_000);
    let id2 = format!("c_{}", uuid::Uuid::new_v4().simple());
    let _: () = client
        .set(&user_key, id2.clone(), None, None, false)
        .await?;
    let other = Call::direct(id2.clone(), "carol", "bob", Media::Audio, 1_000).busy(1_500);
    assert_eq!(
        s.commit(&t, &other, 0, &[], &[], None).await?,
        Commit::Done(1)
    );
    let call3 = Call::direct(
        format!("c_{}", uuid::Uuid::new_v4().simple()),
        "dave",
        "bob",
        Media::Audio,
        3_000,
    );
    let claims = strings(&["dave", "bob"]);
    assert_eq!(
        s.commit(&t, &call3, 0, &claims, &[], None).await?,
        Commit::Done(1),
        "an ended holder does not hold"
    );
    let _: () = client.set(&user_key, id.clone(), None, None, false).await?;
    let call4 = Call::direct(
        format!("c_{}", uuid::Uuid::new_v4().simple()),
        "erin",
        "bob",
        Media::Audio,
        3_000,
    );
    assert_eq!(
        s.commit(&t, &call4, 0, &strings(&["erin", "bob"]), &[], None)
            .await?,
        Commit::Held {
            user: "bob".into(),
            call_id: id.clone()
        },
        "a live holder holds"
    );
    assert_eq!(
        s.commit(&t, &ended, 2, &[], &both, None).await?,
        Commit::Done(3)
    );
    assert_keys_tagged(&client, &[&t]).await?;
    client.quit().await?;
    Ok(())
}

/// History down: an ended call's record waits in the Redis outbox; another node drains
/// it once the database answers, exactly once.
#[tokio::test]
async fn calls_outbox_survives_a_history_outage_and_any_node_drains_it() -> Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use switchboard_dataplane::calls::history::{
        CallHistory, CallRecord, Cursor, MemoryCallHistory,
    };
    use switchboard_dataplane::calls::quality::Summary;
    use switchboard_dataplane::calls::service::Calls;

    struct Flaky {
        up: AtomicBool,
        inner: MemoryCallHistory,
    }
    #[async_trait::async_trait]
    impl CallHistory for Flaky {
        async fn record(&self, rec: &CallRecord) -> Result<(), StoreError> {
            if !self.up.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable(
                    "mongodb: server selection timeout".into(),
                ));
            }
            self.inner.record(rec).await
        }
        async fn list(
            &self,
            tenant: &str,
            user_id: &str,
            limit: usize,
            before: Option<&Cursor>,
        ) -> Result<Vec<CallRecord>, StoreError> {
            self.inner.list(tenant, user_id, limit, before).await
        }
    }

    let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL").unwrap_or_default();
    if redis().await?.is_none() {
        return Ok(());
    }
    // A database of its own: draining takes every tenant's records, so no other test's.
    let mut config = Config::from_url(&format!("{}/13", url.trim_end_matches('/')))?;
    config.version = RespVersion::RESP3;
    let client = Builder::from_config(config).build()?;
    client.init().await?;
    let (t, _) = tenants();
    let store: Arc<dyn CallStore> = Arc::new(RedisCalls::new(client.clone()));
    let cfg = switchboard_crds::config::DataplaneConfig::default();
    let history = Arc::new(Flaky {
        up: AtomicBool::new(false),
        inner: MemoryCallHistory::new(100),
    });
    let node_a = Calls::new(store.clone(), history.clone(), &cfg, true);

    // Node A ends a call while the database is down (it would die here, too).
    let id = format!("c_{}", uuid::Uuid::new_v4().simple());
    let call = Call::direct(id.clone(), "alice", "bob", Media::Audio, 1_000);
    assert_eq!(
        store
            .commit(&t, &call, 0, &strings(&["alice", "bob"]), &[], None)
            .await?,
        Commit::Done(1)
    );
    let ended = call.clone().busy(2_000);
    let rec = serde_json::to_string(&CallRecord::of(&t, &ended, Summary::default()))?;
    assert_eq!(
        store
            .commit(&t, &ended, 1, &[], &strings(&["alice", "bob"]), Some(&rec))
            .await?,
        Commit::Done(2)
    );
    assert!(node_a.drain_history().await.is_err(), "database down");
    assert!(node_a.drain_history().await.is_err(), "still down");
    assert!(history.inner.list(&t, "bob", 10, None).await?.is_empty());

    // The database is back; another node (a fresh Calls on the same Redis) drains it.
    let back = Arc::new(MemoryCallHistory::new(100));
    let node_b = Calls::new(store.clone(), back.clone(), &cfg, true);
    assert!(node_b.drain_history().await? >= 1);
    let got = back.list(&t, "bob", 10, None).await?;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
    assert_eq!(node_b.drain_history().await?, 0, "drained: nothing repeats");
    history.up.store(true, Ordering::SeqCst);
    assert_eq!(node_a.drain_history().await?, 0);
    client.quit().await?;
    Ok(())
}

/// A node whose heartbeat lapsed is swept by another; on its next round it registers its
/// live /webrtc connections again, so their users count as connected everywhere.
#[tokio::test]
async fn calls_a_swept_live_node_registers_its_connections_again() -> Result<()> {
    use std::sync::Arc;
    use switchboard_dataplane::calls::history::MemoryCallHistory;
    use switchboard_dataplane::calls::service::Calls;

    let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL").unwrap_or_default();
    if redis().await?.is_none() {
        return Ok(());
    }
    // A database of its own: the sweep takes every dead node's connections.
    let mut config = Config::from_url(&format!("{}/12", url.trim_end_matches('/')))?;
    config.version = RespVersion::RESP3;
    let client = Builder::from_config(config).build()?;
    client.init().await?;
    let (t, _) = tenants();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (na, nb) = (format!("na-{run}"), format!("nb-{run}"));
    let cfg = switchboard_crds::config::DataplaneConfig::default();
    let node = |_: &str| {
        let store: Arc<dyn CallStore> = Arc::new(RedisCalls::new(client.clone()));
        Calls::new(store, Arc::new(MemoryCallHistory::new(10)), &cfg, true)
    };
    let (a, b) = (node(&na), node(&nb));
    let store = RedisCalls::new(client.clone());
    let conn = format!("{na}/s1");
    a.connected(&t, "bob", &conn, &na).await?;
    a.liveness_tick(&na, 60_000).await?;
    b.liveness_tick(&nb, 60_000).await?;
    assert_eq!(store.conn_count(&t, "bob").await?, 1, "alive: not swept");

    // a's heartbeat lapses (a long pause, say); b takes it for dead.
    let _: i64 = client.del(format!("sb:calls:node:{na}:alive")).await?;
    b.liveness_tick(&nb, 60_000).await?;
    assert_eq!(store.conn_count(&t, "bob").await?, 0, "swept");
    assert!(!store.node_known(&na).await?);

    // a comes back: its socket is still open, so bob is connected again.
    a.liveness_tick(&na, 60_000).await?;
    assert_eq!(store.conn_count(&t, "bob").await?, 1, "registered again");
    assert!(store.node_known(&na).await?);
    assert_eq!(
        store.node_conns(&na).await?,
        vec![(t.clone(), "bob".to_owned(), conn.clone())]
    );
    // Its socket closing still counts down to zero.
    a.disconnected(&t, "bob", &conn, &na).await?;
    assert_eq!(store.conn_count(&t, "bob").await?, 0);
    let _: i64 = client
        .del(vec![
            format!("sb:calls:node:{na}:alive"),
            format!("sb:calls:node:{nb}:alive"),
        ])
        .await?;
    client.quit().await?;
    Ok(())
}

/// The call-history outbox is bounded per tenant (`calls.history_outbox_max`): past it
/// the tenant's oldest record goes and is counted; another tenant's records stay.
async fn calls_outbox_bound_conform(s: &dyn CallStore, t: &str, u: &str) -> Result<()> {
    let before = s.outbox_stats().await?;
    let end = |tenant: &str, i: usize| {
        let call = Call::direct(
            format!("c_{i}_{}", uuid::Uuid::new_v4().simple()),
            "alice",
            "bob",
            Media::Audio,
            1_000,
        )
        .busy(2_000);
        (tenant.to_owned(), call, format!("{tenant}-record-{i}"))
    };
    for (tenant, call, rec) in [
        end(u, 0),
        end(t, 1),
        end(t, 2),
        end(t, 3),
        end(t, 4),
        end(t, 5),
    ] {
        assert!(matches!(
            s.commit(&tenant, &call, 0, &[], &[], Some(&rec)).await?,
            Commit::Done(_)
        ));
    }
    let mine: Vec<String> = s
        .outbox(1_000_000)
        .await?
        .into_iter()
        .filter(|(tenant, _)| tenant == t || tenant == u)
        .map(|(_, r)| r)
        .collect();
    let want = [
        format!("{u}-record-0"),
        format!("{t}-record-3"),
        format!("{t}-record-4"),
        format!("{t}-record-5"),
    ];
    let mut sorted = mine.clone();
    sorted.sort();
    let mut want_sorted = want.to_vec();
    want_sorted.sort();
    assert_eq!(sorted, want_sorted, "the newest 3 of t, and u's one");
    let after = s.outbox_stats().await?;
    assert_eq!(after.dropped - before.dropped, 2);
    assert!(after.pending >= 4, "{after:?}");
    for (tenant, r) in [(u, &want[0]), (t, &want[1]), (t, &want[2]), (t, &want[3])] {
        s.outbox_done(tenant, r).await?;
    }
    Ok(())
}

#[tokio::test]
async fn calls_outbox_bound_memory() -> Result<()> {
    let (a, b) = tenants();
    calls_outbox_bound_conform(&MemoryCalls::with_outbox_max(3), &a, &b).await
}

#[tokio::test]
async fn calls_outbox_bound_redis() -> Result<()> {
    let Some(client) = redis().await? else {
        return Ok(());
    };
    let (a, b) = tenants();
    calls_outbox_bound_conform(&RedisCalls::new(client.clone()).with_outbox_max(3), &a, &b).await?;
    client.quit().await?;
    Ok(())
}

/// Call history per user is bounded by age (`calls.history_max_age`): older calls are
/// not listed, and recording a participant's next call deletes them.
#[tokio::test]
async fn call_history_memory_ages() -> Result<()> {
    use switchboard_dataplane::calls::history::{CallHistory, CallRecord, MemoryCallHistory};
    use switchboard_dataplane::calls::quality::Summary;
    let (t, _) = tenants();
    let now = now_ms();
    let h = MemoryCallHistory::new(100).with_max_age(Some(3_600_000));
    let old = Call::direct(
        "c_old".into(),
        "alice",
        "bob",
        Media::Audio,
        now - 7_200_000,
    )
    .busy(now - 7_200_000);
    let new = Call::direct("c_new".into(), "alice", "bob", Media::Audio, now).busy(now);
    h.record(&CallRecord::of(&t, &old, Summary::default()))
        .await?;
    let ids = |v: Vec<CallRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert!(
        h.list(&t, "bob", 10, None).await?.is_empty(),
        "too old to list"
    );
    h.record(&CallRecord::of(&t, &new, Summary::default()))
        .await?;
    assert_eq!(ids(h.list(&t, "bob", 10, None).await?), ["c_new"]);
    let unbounded = MemoryCallHistory::new(100);
    unbounded
        .record(&CallRecord::of(&t, &old, Summary::default()))
        .await?;
    assert_eq!(ids(unbounded.list(&t, "bob", 10, None).await?), ["c_old"]);
    Ok(())
}

//! The MongoDB wire protocol (tests/env: FerretDB with SQLite, or the server in
//! MONGODB_URI) through the mongodb crate: insert, find, create and list an index.

use anyhow::{Context, ensure};
use mongodb::bson::{Document, doc};
use mongodb::{Client, IndexModel};
use switchboard_smoke::{endpoint, unique_name};

#[tokio::test]
async fn insert_find_and_index() -> anyhow::Result<()> {
    let Some(uri) = endpoint("SWITCHBOARD_TEST_MONGODB_URI") else {
        return Ok(());
    };
    let client = Client::with_uri_str(&uri)
        .await
        .with_context(|| format!("bad MongoDB URI {uri}"))?;
    let db = client.database(&unique_name("smoke").replace('-', "_"));
    let devices = db.collection::<Document>("devices");

    let token = unique_name("token");
    let inserted = devices
        .insert_one(doc! { "user": "alice", "platform": "fcm", "token": &token })
        .await
        .context("insert_one")?;
    let found = devices
        .find_one(doc! { "token": &token })
        .await
        .context("find_one")?
        .context("the inserted document was not found")?;
    ensure!(
        found.get("_id") == Some(&inserted.inserted_id),
        "found {found:?}"
    );
    ensure!(found.get_str("user")? == "alice", "found {found:?}");

    let index = devices
        .create_index(
            IndexModel::builder()
                .keys(doc! { "user": 1, "platform": 1 })
                .build(),
        )
        .await
        .context("create_index")?;
    let names = devices
        .list_index_names()
        .await
        .context("list_index_names")?;
    ensure!(
        names.contains(&index.index_name),
        "index {} not in {names:?}",
        index.index_name
    );
    ensure!(
        names.iter().any(|n| n == "_id_"),
        "no _id_ index in {names:?}"
    );

    db.drop().await.context("dropping the test database")?;
    Ok(())
}

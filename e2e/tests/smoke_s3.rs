//! The S3 server: objects go in and come out, and a conditional create (If-None-Match: *), which
//! Delta Lake's commit protocol on S3 relies on, refuses to overwrite.

use bytes::Bytes;
use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::TestBucket;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

#[tokio::test]
async fn put_get_and_conditional_create() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let bucket = TestBucket::create(&env, "smoke").await?;
    let store = bucket.store()?;

    let path = Path::from("dir/object.json");
    store
        .put(&path, PutPayload::from_static(b"{\"v\":1}"))
        .await?;
    let got = store.get(&path).await?.bytes().await?;
    assert_eq!(got, Bytes::from_static(b"{\"v\":1}"));

    let log = Path::from("_delta_log/00000000000000000000.json");
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    store
        .put_opts(&log, PutPayload::from_static(b"first"), create.clone())
        .await?;
    let second = store
        .put_opts(&log, PutPayload::from_static(b"second"), create)
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "a second conditional create must fail with AlreadyExists, got {second:?}"
    );
    let kept = store.get(&log).await?.bytes().await?;
    assert_eq!(
        kept,
        Bytes::from_static(b"first"),
        "the first writer's commit stays"
    );

    bucket.remove().await?;
    Ok(())
}

//! Two writers on one database: the loop's writer (its own connection;
//! IMMEDIATE transactions on SQLite) and admin writes through the async
//! pool. Neither may fail because the other holds the write lock. On each
//! backend.

use suanli_api::Class;
use suanli_server::store::{NewJob, Write};

#[macro_use]
mod common;
use common::{Db, Place};

on_both_backends!(loop_batches_and_admin_writes_interleave_without_errors);

fn job(i: i64) -> NewJob {
    NewJob {
        name: format!("j{i}"),
        command: vec!["run".to_string()],
        tasks: 1,
        cpu_milli: 1000,
        memory_mib: 1024,
        num_gpu: 1,
        gpu_milli: 1000,
        gpu_models: Vec::new(),
        class: Class::OnDemand,
        env: Default::default(),
        workdir: String::new(),
        max_runtime_s: None,
        retries: 0,
        idem_key: None,
        idem_hash: None,
        service: None,
    }
}

async fn loop_batches_and_admin_writes_interleave_without_errors(db: Db) {
    let place = Place::new(db).await;
    let store = place.open().await;
    let t = store.create_tenant("acme", 1.0, "test").await.unwrap();
    let admin = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                store
                    .create_tenant(&format!("t{i}"), 1.0, "test")
                    .await
                    .unwrap();
                store
                    .set_quota(t.id, &format!("M{}", i % 7), 1000 * i, None, "test")
                    .await
                    .unwrap();
            }
        })
    };
    let mut id = 0;
    for _ in 0..300 {
        let writes = (0..50)
            .map(|_| {
                id += 1;
                Write::InsertJob {
                    id,
                    tenant_id: t.id,
                    job: job(id),
                    at: id,
                }
            })
            .collect();
        store.commit(writes).await.unwrap();
    }
    admin.await.unwrap();
    assert_eq!(store.max_job_id().await.unwrap(), 15_000);
    assert_eq!(store.tenants().await.unwrap().len(), 301);
    assert_eq!(store.quotas(t.id).await.unwrap().len(), 7);
}

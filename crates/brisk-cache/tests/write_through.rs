//! `WriteThrough` and `WriteBehind` over a real PostgreSQL table (brisk-testkit), with memory
//! alone and with Redis shared by two instances.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_cache::{
    Error, MemoryCache, NoRemote, Source, Stamped, Tiered, WriteBehind, WriteThrough,
    redis::RedisCache,
};
use brisk_testkit::{PostgresServer, RedisServer};
use tokio_postgres::{Client, NoTls};

/// The `products` table, counting the queries that reach it and the rows batches carry.
struct Products {
    client: Client,
    queries: Arc<AtomicUsize>,
    rows_written: Arc<AtomicUsize>,
}

impl Source<i64, String> for Products {
    type Error = tokio_postgres::Error;

    async fn load(&self, id: &i64) -> Result<Option<String>, Self::Error> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let row = self
            .client
            .query_opt("SELECT name FROM products WHERE id = $1", &[id])
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn save(&self, id: &i64, name: &String) -> Result<(), Self::Error> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        self.client
            .execute(
                "INSERT INTO products (id, name) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
                &[id, name],
            )
            .await
            .map(drop)
    }

    async fn delete(&self, id: &i64) -> Result<(), Self::Error> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        self.client
            .execute("DELETE FROM products WHERE id = $1", &[id])
            .await
            .map(drop)
    }

    /// One multi-row upsert per batch.
    async fn save_many(&self, rows: &[(i64, String)]) -> Result<(), Self::Error> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        self.rows_written.fetch_add(rows.len(), Ordering::SeqCst);
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        let names: Vec<&str> = rows.iter().map(|(_, name)| name.as_str()).collect();
        self.client
            .execute(
                "INSERT INTO products (id, name) SELECT * FROM UNNEST($1::bigint[], $2::text[]) \
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
                &[&ids, &names],
            )
            .await
            .map(drop)
    }
}

async fn products(url: &str, queries: &Arc<AtomicUsize>) -> Products {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    Products {
        client,
        queries: Arc::clone(queries),
        rows_written: Arc::default(),
    }
}

async fn row(url: &str, id: i64) -> Option<String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .query_opt("SELECT name FROM products WHERE id = $1", &[&id])
        .await
        .unwrap()
        .map(|row| row.get(0))
}

fn database() -> (PostgresServer, String) {
    let mut server = PostgresServer::start().unwrap();
    server
        .execute(
            "CREATE TABLE products (id bigint PRIMARY KEY, \
             name text NOT NULL CHECK (name <> ''))",
        )
        .unwrap();
    server
        .execute("INSERT INTO products (id, name) VALUES (1, 'kettle')")
        .unwrap();
    let url = server.url();
    (server, url)
}

#[tokio::test]
async fn reads_go_through_and_writes_reach_the_table_first() {
    let (_server, url) = database();
    let queries = Arc::new(AtomicUsize::new(0));
    let cache = Tiered::<i64, Option<String>, NoRemote>::builder()
        .memory(MemoryCache::builder().max_entries(100).build().unwrap())
        .negative_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    let store = WriteThrough::new(cache, products(&url, &queries).await);

    assert_eq!(store.get(1).await.unwrap().as_deref(), Some("kettle"));
    assert_eq!(store.get(1).await.unwrap().as_deref(), Some("kettle"));
    assert_eq!(
        queries.load(Ordering::SeqCst),
        1,
        "the second read is a hit"
    );
    assert_eq!(store.get(2).await.unwrap(), None);
    assert_eq!(store.get(2).await.unwrap(), None);
    assert_eq!(queries.load(Ordering::SeqCst), 2, "the absence is cached");

    store.put(2, "teapot".to_owned()).await.unwrap();
    assert_eq!(row(&url, 2).await.as_deref(), Some("teapot"));
    assert_eq!(store.get(2).await.unwrap().as_deref(), Some("teapot"));
    assert_eq!(
        queries.load(Ordering::SeqCst),
        3,
        "the write, and no read after it"
    );

    // The table refuses an empty name: nothing changes, in the table or in the cache.
    let refused = store.put(2, String::new()).await;
    assert!(
        matches!(&refused, Err(Error::Write { key, .. }) if key == "2"),
        "{refused:?}"
    );
    assert_eq!(row(&url, 2).await.as_deref(), Some("teapot"));
    assert_eq!(store.get(2).await.unwrap().as_deref(), Some("teapot"));

    store.delete(1).await.unwrap();
    assert_eq!(row(&url, 1).await, None);
    let before = queries.load(Ordering::SeqCst);
    assert_eq!(store.get(1).await.unwrap(), None);
    assert_eq!(
        queries.load(Ordering::SeqCst),
        before,
        "the deletion is cached"
    );
}

#[tokio::test]
async fn two_instances_share_the_table_through_redis() {
    let (_server, url) = database();
    let redis_server = RedisServer::start().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let mut instances = Vec::new();
    for _ in 0..2 {
        let client = redis::Client::open(redis_server.url()).unwrap();
        let remote: RedisCache<i64, Stamped<Option<String>>> =
            RedisCache::builder(redis::aio::ConnectionManager::new(client).await.unwrap())
                .prefix("products")
                .ttl(Duration::from_secs(3600))
                .build()
                .await
                .unwrap();
        let cache = Tiered::builder()
            .memory(
                MemoryCache::builder()
                    .max_entries(100)
                    .ttl(Duration::from_secs(60))
                    .build()
                    .unwrap(),
            )
            .remote(remote)
            .build()
            .unwrap();
        instances.push(WriteThrough::new(cache, products(&url, &queries).await));
    }
    instances[0].put(7, "kettle".to_owned()).await.unwrap();
    // The other instance finds it in Redis: no query.
    let before = queries.load(Ordering::SeqCst);
    assert_eq!(
        instances[1].get(7).await.unwrap().as_deref(),
        Some("kettle")
    );
    assert_eq!(queries.load(Ordering::SeqCst), before);
    assert_eq!(row(&url, 7).await.as_deref(), Some("kettle"));
}

fn key_of(task: i64, n: i64) -> i64 {
    ((n / 2) * 7 + task * 500) % 2_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_loses_no_write_and_coalesces_repeats() {
    let (_server, url) = database();
    let queries = Arc::new(AtomicUsize::new(0));
    let source = products(&url, &queries).await;
    let rows_written = Arc::clone(&source.rows_written);
    let cache = Tiered::<i64, Option<String>, NoRemote>::builder()
        .memory(MemoryCache::builder().max_entries(10_000).build().unwrap())
        .build()
        .unwrap();
    let store = Arc::new(WriteBehind::new(cache, source));
    // 10 000 writes from 4 racing tasks over 2 000 keys: each key written several times, by
    // several tasks, and twice in a row by each (a hot key updated in a burst).
    let writers: Vec<_> = (0..4i64)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for n in 0..2_500i64 {
                    let key = key_of(task, n);
                    store.put(key, format!("t{task}n{n}")).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let cached: Vec<Option<String>> = {
        // Keys never written are absent in both.
        let mut cached = Vec::new();
        for key in 0..2_000 {
            cached.push(store.get(key).await.unwrap());
        }
        cached
    };
    store.shutdown().await;
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT id, name FROM products WHERE id < 2000 ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let written_keys: std::collections::BTreeSet<i64> = (0..4)
        .flat_map(|task| (0..2_500).map(move |n| key_of(task, n)))
        .collect();
    let stored_keys: std::collections::BTreeSet<i64> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(stored_keys, written_keys, "a write was lost");
    for row in &rows {
        let (id, name): (i64, String) = (row.get(0), row.get(1));
        assert_eq!(
            Some(&name),
            cached[id as usize].as_ref(),
            "key {id}: the table and the cache disagree on the last write"
        );
    }
    let written = rows_written.load(Ordering::SeqCst);
    assert!(
        written < 10_000,
        "{written} rows written for 10 000 writes: repeats in a batch were not coalesced"
    );
    let batches = queries.load(Ordering::SeqCst);
    eprintln!("{written} rows in {batches} queries for 10 000 writes");
    assert!(
        batches < 5_000,
        "{batches} queries: the writes were not batched"
    );
    assert!(matches!(
        store.put(1, "late".into()).await,
        Err(Error::Closed { .. })
    ));
}

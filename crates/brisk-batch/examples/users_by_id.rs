//! N+1 becomes 1: the authors of 50 posts, each looked up by its own task as GraphQL
//! resolvers do, loaded through a `Loader` with one `SELECT ... WHERE id IN (...)`, beside
//! the naive query per post. On SQLite (built in): nothing to install, no server.
//!
//! Run with `cargo run -p brisk-batch --example users_by_id`; `cargo nextest` runs its test.
//! The same on PostgreSQL, with `= ANY($1)`, is the crate's `postgres_loader` test.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
};

use brisk_batch::{BatchLoad, Loaded, Loader};
use brisk_pool::diesel::SqlitePool;
use diesel::{
    QueryableByName, sql_query,
    sql_types::{BigInt, Text},
};
use tokio::task::JoinSet;

#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
struct User {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    name: String,
}

/// What can go wrong loading users: no connection, or the query failed.
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error(transparent)]
    Pool(#[from] brisk_pool::Error),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// Users by id, one query per batch of ids.
struct UsersById {
    pool: SqlitePool,
    queries: AtomicUsize,
}

impl BatchLoad for UsersById {
    type Key = i64;
    type Value = User;
    type Error = DbError;

    async fn load(&self, ids: &[i64]) -> Result<Loaded<i64, User, DbError>, DbError> {
        // Scoped: its blanket `load(self, connection)` would shadow `Loader::load` on an owned
        // loader (and `AtomicUsize::load`) wherever it is imported.
        use diesel_async::RunQueryDsl;
        self.queries.fetch_add(1, Ordering::Relaxed);
        // The whole batch as one bound value: a JSON array that SQLite's `json_each` unpacks.
        let ids = format!(
            "[{}]",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        );
        let mut connection = self.pool.get().await?;
        let users: Vec<User> =
            sql_query("SELECT id, name FROM users WHERE id IN (SELECT value FROM json_each(?))")
                .bind::<Text, _>(ids)
                .load(&mut *connection)
                .await?;
        Ok(users.into_iter().map(|user| (user.id, user)).collect())
    }
}

/// The naive way: one query per id.
async fn user_by_id(pool: &SqlitePool, id: i64) -> Result<Option<User>, DbError> {
    use diesel_async::RunQueryDsl;
    let mut connection = pool.get().await?;
    let mut users: Vec<User> = sql_query("SELECT id, name FROM users WHERE id = ?")
        .bind::<BigInt, _>(id)
        .load(&mut *connection)
        .await?;
    Ok(users.pop())
}

/// The authors of `posts` (author ids), each looked up by its own task, as resolvers do.
async fn authors(
    loader: &Loader<UsersById>,
    posts: &[i64],
) -> Result<Vec<Option<User>>, brisk_batch::Error<DbError>> {
    let mut tasks = JoinSet::new();
    for (position, &author) in posts.iter().enumerate() {
        let loader = loader.clone();
        tasks.spawn(async move { (position, loader.load(author).await) });
    }
    let mut authors = vec![None; posts.len()];
    while let Some(joined) = tasks.join_next().await {
        let (position, author) = joined.expect("a resolver task panicked");
        authors[position] = author?;
    }
    Ok(authors)
}

/// A database file in the temp directory with 100 users, `user 1` to `user 100`; removed
/// (with its WAL files) when dropped.
struct Database {
    path: PathBuf,
}

impl Database {
    async fn seeded(name: &str) -> anyhow::Result<(Self, SqlitePool)> {
        use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
        let path =
            std::env::temp_dir().join(format!("brisk-batch-{name}-{}.sqlite", std::process::id()));
        let database = Self { path };
        database.remove();
        let pool = SqlitePool::from_url(&database.path.display().to_string()).await?;
        let mut connection = pool.get().await?;
        connection
            .batch_execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            .await?;
        sql_query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
             INSERT INTO users SELECT i, 'user ' || i FROM n",
        )
        .execute(&mut *connection)
        .await?;
        drop(connection);
        Ok((database, pool))
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.remove();
    }
}

/// 50 posts by 20 authors, and one by an author who no longer exists (id 404).
fn posts() -> Vec<i64> {
    (0..50).map(|post| post % 20 + 1).chain([404]).collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (_database, pool) = Database::seeded("example").await?;
    let posts = posts();

    let mut naive = 0;
    for &author in &posts {
        user_by_id(&pool, author).await?;
        naive += 1;
    }
    let loader = Loader::new(UsersById {
        pool,
        queries: AtomicUsize::new(0),
    });
    let found = authors(&loader, &posts).await?;
    let batched = loader.batch_fn().queries.load(Ordering::Relaxed);
    eprintln!(
        "{} posts: {naive} queries one by one, {batched} through the Loader; {} authors found",
        posts.len(),
        found.iter().flatten().count()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // One thread runs the spawned tasks in the order they were spawned; the batch closes on
    // its size (the 21 distinct authors), so a busy machine cannot split it.
    #[tokio::test(flavor = "current_thread")]
    async fn fifty_author_lookups_are_one_query() {
        let (_database, pool) = Database::seeded("test").await.unwrap();
        let posts = posts();
        let distinct = posts.iter().collect::<std::collections::HashSet<_>>().len();
        let loader = Loader::builder(UsersById {
            pool: pool.clone(),
            queries: AtomicUsize::new(0),
        })
        .max_batch_size(distinct)
        .max_delay(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
        let found = authors(&loader, &posts).await.unwrap();
        assert_eq!(
            loader.batch_fn().queries.load(Ordering::Relaxed),
            1,
            "N+1 became 1"
        );
        for (&author, user) in posts.iter().zip(&found) {
            assert_eq!(user, &user_by_id(&pool, author).await.unwrap(), "{author}");
            if author == 404 {
                assert_eq!(user, &None, "a missing row loads as None");
            } else {
                assert_eq!(
                    user.as_ref().map(|u| u.name.clone()),
                    Some(format!("user {author}"))
                );
            }
        }
    }
}

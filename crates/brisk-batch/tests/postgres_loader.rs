//! N+1 becomes 1 on a real PostgreSQL (a throw-away server from brisk-testkit): the authors of
//! 50 posts loaded through a `Loader` with one `SELECT ... WHERE id = ANY($1)`, beside the naive
//! query per post. (The example `users_by_id` shows the same on SQLite, with nothing to
//! install.)

use std::sync::atomic::{AtomicUsize, Ordering};

use brisk_batch::{BatchLoad, Loaded, Loader};
use brisk_pool::diesel::PgPool;
use diesel::{
    QueryableByName, sql_query,
    sql_types::{Array, BigInt, Text},
};
use tokio::task::JoinSet;

use support::DbError;

mod support;

#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
struct User {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    name: String,
}

/// Users by id, one query per batch of ids.
struct UsersById {
    pool: PgPool,
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
        let mut connection = self.pool.get().await?;
        let users: Vec<User> = sql_query("SELECT id, name FROM users WHERE id = ANY($1)")
            .bind::<Array<BigInt>, _>(ids)
            .load(&mut *connection)
            .await?;
        Ok(users.into_iter().map(|user| (user.id, user)).collect())
    }
}

/// The naive way: one query per id.
async fn user_by_id(pool: &PgPool, id: i64) -> Result<Option<User>, DbError> {
    use diesel_async::RunQueryDsl;
    let mut connection = pool.get().await?;
    let mut users: Vec<User> = sql_query("SELECT id, name FROM users WHERE id = $1")
        .bind::<BigInt, _>(id)
        .load(&mut *connection)
        .await?;
    Ok(users.pop())
}

/// The authors of `posts` (author ids), each looked up by its own task, as resolvers do.
async fn authors(loader: &Loader<UsersById>, posts: &[i64]) -> Vec<Option<User>> {
    let mut tasks = JoinSet::new();
    for (position, &author) in posts.iter().enumerate() {
        let loader = loader.clone();
        tasks.spawn(async move { (position, loader.load(author).await) });
    }
    let mut authors = vec![None; posts.len()];
    while let Some(joined) = tasks.join_next().await {
        let (position, author) = joined.expect("a resolver task panicked");
        authors[position] = author.expect("loading an author failed");
    }
    authors
}

/// A database with 100 users, `user 1` to `user 100`.
async fn seeded(server: &mut brisk_testkit::PostgresServer) -> anyhow::Result<PgPool> {
    use diesel_async::RunQueryDsl;
    let url = server.create_database("users_by_id")?;
    let pool = PgPool::from_url(&url).await?;
    let mut connection = pool.get().await?;
    sql_query("CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&mut *connection)
        .await?;
    sql_query("INSERT INTO users SELECT i, 'user ' || i FROM generate_series(1, 100) AS i")
        .execute(&mut *connection)
        .await?;
    drop(connection);
    Ok(pool)
}

/// 50 posts by 20 authors, and one by an author who no longer exists (id 404).
fn posts() -> Vec<i64> {
    (0..50).map(|post| post % 20 + 1).chain([404]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // One thread runs the spawned tasks in the order they were spawned, so the author who
    // fills the batch (404, the last post) comes after every other lookup.
    #[tokio::test(flavor = "current_thread")]
    async fn fifty_author_lookups_are_one_query() {
        let mut server = brisk_testkit::PostgresServer::start().unwrap();
        let pool = seeded(&mut server).await.unwrap();
        let posts = posts();
        // A busy machine can leave the default 1 ms window before all 51 tasks have run, so
        // the test closes the batch on its size instead: the 21 distinct authors fill it.
        let distinct = posts.iter().collect::<std::collections::HashSet<_>>().len();
        let loader = Loader::builder(UsersById {
            pool: pool.clone(),
            queries: AtomicUsize::new(0),
        })
        .max_batch_size(distinct)
        .max_delay(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
        let found = authors(&loader, &posts).await;
        assert_eq!(
            loader.batch_fn().queries.load(Ordering::Relaxed),
            1,
            "N+1 became 1"
        );
        for (author, user) in posts.iter().zip(&found) {
            if *author == 404 {
                assert_eq!(user, &None, "a missing row loads as None");
            } else {
                assert_eq!(
                    user.as_ref().map(|u| u.name.clone()),
                    Some(format!("user {author}"))
                );
            }
        }
        // The naive way, for the count: one query per post.
        for &author in &posts {
            assert_eq!(
                user_by_id(&pool, author).await.unwrap(),
                found[posts.iter().position(|&a| a == author).unwrap()]
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_query_reaches_every_caller_of_the_batch() {
        let mut server = brisk_testkit::PostgresServer::start().unwrap();
        let pool = seeded(&mut server).await.unwrap();
        {
            use diesel_async::RunQueryDsl;
            sql_query("DROP TABLE users")
                .execute(&mut *pool.get().await.unwrap())
                .await
                .unwrap();
        }
        let loader = Loader::new(UsersById {
            pool,
            queries: AtomicUsize::new(0),
        });
        let (a, b) = tokio::join!(loader.load(1), loader.load(2));
        for error in [a.unwrap_err(), b.unwrap_err()] {
            assert!(
                error
                    .to_string()
                    .contains("relation \"users\" does not exist"),
                "{error}"
            );
        }
    }
}

//! What the PostgreSQL tests share.

/// What can go wrong talking to the database: no connection, or the query failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error(transparent)]
    Pool(#[from] brisk_pool::Error),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

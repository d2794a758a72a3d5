//! `FromBatchFn`: an existing `dataloader::BatchFn` runs on brisk's Loader unchanged.

use std::collections::HashMap;

use brisk_batch::{Error, Loader, dataloader::FromBatchFn};

/// A BatchFn as a dataloader user has it: `&mut self` state (it counts its calls and
/// remembers every batch), a non-`Send`-bounded future, keys it does not know left out.
#[derive(Default)]
struct Names {
    batches: Vec<Vec<u32>>,
}

impl dataloader::BatchFn<u32, String> for Names {
    async fn load(&mut self, keys: &[u32]) -> HashMap<u32, String> {
        self.batches.push(keys.to_vec());
        assert!(!keys.contains(&13), "unlucky key 13");
        keys.iter()
            .filter(|&&k| k < 100)
            .map(|&k| (k, format!("name {k} (batch {})", self.batches.len())))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_fn_runs_batched_with_its_state_kept_between_batches() {
    let loader = Loader::new(FromBatchFn::new(Names::default()));
    // `load_many` asks for its keys at once: one batch, however the two workers interleave.
    let mut loaded = loader.load_many([1, 2, 404]).await.into_iter();
    let (a, b, missing) = (
        loaded.next().unwrap(),
        loaded.next().unwrap(),
        loaded.next().unwrap(),
    );
    assert_eq!(a.unwrap().as_deref(), Some("name 1 (batch 1)"));
    assert_eq!(b.unwrap().as_deref(), Some("name 2 (batch 1)"));
    assert_eq!(missing.unwrap(), None, "a key left out loads as None");
    // The same BatchFn value serves the next batch: its `&mut self` state carries over.
    assert_eq!(
        loader.load(3).await.unwrap().as_deref(),
        Some("name 3 (batch 2)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_batch_fn_reaches_its_callers_and_the_next_batch_runs() {
    let loader = Loader::builder(FromBatchFn::new(Names::default()))
        .cache(HashMap::new())
        .build()
        .unwrap();
    for error in loader
        .load_many([12, 13])
        .await
        .into_iter()
        .map(Result::unwrap_err)
    {
        assert!(
            matches!(&error, Error::Panicked { size: 2, message } if message.contains("unlucky")),
            "{error:?}"
        );
    }
    assert_eq!(
        loader.load(12).await.unwrap().as_deref(),
        Some("name 12 (batch 2)")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn it_also_runs_on_a_current_thread_runtime() {
    let loader = Loader::new(FromBatchFn::new(Names::default()));
    let (a, b) = tokio::join!(loader.load(7), loader.load(8));
    assert!(a.unwrap().is_some() && b.unwrap().is_some());
}

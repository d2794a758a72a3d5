//! Three OS processes sharing one Redis: a cold key stampeded by 1000 callers in each loads
//! once in total, and a write in one process leaves the others' memory (the measured p99 is
//! printed here; `cargo xtask bench cache` reports it).

#[path = "support/processes.rs"]
mod processes;

use brisk_testkit::RedisServer;

const PROCESSES: u64 = 3;
const CALLERS: usize = 1000;
const KEYS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_load_once_and_see_each_others_writes() {
    let server = RedisServer::start().unwrap();
    let report = processes::run(&server.url(), PROCESSES, CALLERS, KEYS, || {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.args([
            "--ignored",
            "--exact",
            "process_child",
            "--nocapture",
            "--test-threads=1",
        ]);
        command
    })
    .await;
    assert_eq!(report.loads, 1, "one load in three processes");
    assert_eq!(
        report.served,
        PROCESSES * CALLERS as u64,
        "every get answered"
    );
    assert_eq!(
        report.missed, 0,
        "every write left the other processes' memory"
    );
    assert_eq!(report.latencies_us.len(), (PROCESSES as usize - 1) * KEYS);
    eprintln!(
        "write propagation across processes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report.quantile_ms(0.5),
        report.quantile_ms(0.99),
        report.quantile_ms(1.0)
    );
}

/// One child process of the test above; ignored unless started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of three_processes_load_once_and_see_each_others_writes"]
async fn process_child() {
    let spec = std::env::var(processes::CHILD_ENV)
        .expect("started by three_processes_load_once_and_see_each_others_writes");
    processes::child(&spec).await;
}

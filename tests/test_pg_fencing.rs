//! Fencing on a real PostgreSQL with real processes: a worker paused with
//! SIGSTOP inside a step, past its lease, loses the execution to another
//! worker; resumed with SIGCONT, it calls the ledger once more (absorbed:
//! the key was applied) and its log write is refused (`LeaseLost`).
#![cfg(feature = "postgres")]

mod support;

use std::time::{Duration, Instant};

use support::pg::{client, create_ledger, fresh_schema, pg_url, spawn, submit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_past_its_lease_writes_nothing_and_its_call_is_absorbed() {
    let url = pg_url();
    let schema = fresh_schema("fencing");
    let sql = client(&url).await;
    // Step s1 waits 3 s before its effect; leases last 1 s.
    let args: Vec<String> = ["slow=1:3000", "ttl_ms=1000", "poll_ms=200"]
        .map(str::to_owned)
        .to_vec();
    submit(&url, &schema, 0, &args);
    create_ledger(&sql, &schema).await;
    let mut work = vec!["work".to_owned()];
    work.extend(args.iter().cloned());
    let a = spawn(&url, &schema, &work);
    a.wait_line("ready", Duration::from_secs(60));
    submit(&url, &schema, 1, &args);

    // Pause A once it logged the start of s1 (it is inside the step).
    let started = format!(
        "SELECT count(*) FROM {schema}.events WHERE execution_id = 'job-00000' AND kind = 'step_started' AND step = 1"
    );
    let end = Instant::now() + Duration::from_secs(60);
    while sql.query_one(&started, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(Instant::now() < end, "worker A never started s1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.signal("STOP");

    // B takes the execution over once A's lease expired, and finishes it.
    let b = spawn(&url, &schema, &work);
    b.wait_line("ready", Duration::from_secs(60));
    let status = format!("SELECT status FROM {schema}.executions WHERE id = 'job-00000'");
    let end = Instant::now() + Duration::from_secs(120);
    while sql
        .query_one(&status, &[])
        .await
        .unwrap()
        .get::<_, String>(0)
        != "completed"
    {
        assert!(
            Instant::now() < end,
            "worker B never finished the execution"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events =
        format!("SELECT count(*), max(seq) FROM {schema}.events WHERE execution_id = 'job-00000'");
    let before = sql.query_one(&events, &[]).await.unwrap();
    let (count, last): (i64, i64) = (before.get(0), before.get(1));

    // A wakes up inside s1: its call reaches the ledger, its write is refused.
    a.signal("CONT");
    let line = a.wait_line("lease-lost append", Duration::from_secs(60));
    assert_eq!(line, "lease-lost append job-00000");

    let calls = sql
        .query(
            &format!(
                "SELECT pid FROM {schema}_fx.calls WHERE effect = 'do:job-00000/s1' ORDER BY n"
            ),
            &[],
        )
        .await
        .unwrap();
    let pids: Vec<i64> = calls.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        pids,
        vec![i64::from(b.pid()), i64::from(a.pid())],
        "B applied s1's effect, then A repeated the call"
    );
    let effects: i64 = sql
        .query_one(
            &format!("SELECT count(*) FROM {schema}_fx.effects WHERE effect = 'do:job-00000/s1'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(effects, 1, "the ledger absorbed A's repeated call");
    let after = sql.query_one(&events, &[]).await.unwrap();
    assert_eq!(
        (after.get::<_, i64>(0), after.get::<_, i64>(1)),
        (count, last),
        "A wrote nothing to the log after losing its lease"
    );
    let status: String = sql.query_one(&status, &[]).await.unwrap().get(0);
    assert_eq!(status, "completed");
    a.kill();
    b.kill();
}

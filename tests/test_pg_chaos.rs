//! Chaos with real processes on a real PostgreSQL: three `pg_worker`
//! processes run 500 four-step sagas with seeded step failures while the
//! test SIGKILLs and restarts them at random moments. At the end every
//! execution is completed or compensated, and the ledger shows no effect
//! lost, none applied twice, and the repeated invocations it absorbed.
//! Replay a run with `SAGA_CHAOS_SEED=<seed>` (printed).
#![cfg(feature = "postgres")]

mod support;

use std::time::{Duration, Instant};

use support::pg::{Rng, client, create_ledger, fresh_schema, pg_url, seed, spawn, submit, verdict};

const SAGAS: u64 = 500;
const WORKERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_of_killed_workers_loses_and_repeats_no_effect() {
    let url = pg_url();
    let schema = fresh_schema("chaos");
    let seed = seed();
    println!("chaos seed={seed} (replay with SAGA_CHAOS_SEED={seed}) schema={schema}");
    let sql = client(&url).await;
    let args: Vec<String> = vec![
        format!("seed={seed}"),
        "fail=60".to_owned(),
        "step_ms=300".to_owned(),
        "ttl_ms=1000".to_owned(),
        "poll_ms=200".to_owned(),
        "concurrency=8".to_owned(),
        // The kills come from outside, every few hundred ms, and may cut
        // one step's attempt many times: no crash loop of the step's own,
        // which the default limit (3 cut-off starts) would end stuck.
        "crash_limit=1000".to_owned(),
    ];
    // The store's schema exists once a process connected: submit first.
    submit(&url, &schema, 0, &args);
    create_ledger(&sql, &schema).await;
    let mut work = vec!["work".to_owned()];
    work.extend(args.iter().cloned());
    let mut workers: Vec<_> = (0..WORKERS).map(|_| spawn(&url, &schema, &work)).collect();
    for w in &workers {
        w.wait_line("ready", Duration::from_secs(60));
    }
    submit(&url, &schema, SAGAS, &args);
    let mut rng = Rng(seed);
    let mut kills = 0;
    let started = Instant::now();
    let mut next_kill = Instant::now() + Duration::from_millis(200 + rng.below(800));
    support::pg::wait_finished(&sql, &schema, Duration::from_secs(300), || {
        if Instant::now() < next_kill {
            return;
        }
        let victim = rng.below(WORKERS as u64) as usize;
        let fresh = spawn(&url, &schema, &work);
        std::mem::replace(&mut workers[victim], fresh).kill();
        kills += 1;
        next_kill = Instant::now() + Duration::from_millis(100 + rng.below(700));
    })
    .await;
    let elapsed = started.elapsed();
    for w in workers {
        w.kill();
    }
    let v = verdict(&sql, &schema, 4).await;
    println!(
        "chaos seed={seed} sagas={SAGAS} completed={} compensated={} kills={kills} calls={} effects={} absorbed={} elapsed={elapsed:?}",
        v.completed, v.compensated, v.calls, v.effects, v.absorbed
    );
    assert_eq!(v.completed + v.compensated, SAGAS as i64);
    assert!(v.compensated > 0, "the seeded failures compensated nothing");
    assert!(kills > 0, "no worker was killed");
    assert!(
        v.absorbed > 0,
        "no repeated invocation: the kills never cut a step (seed={seed})"
    );
}

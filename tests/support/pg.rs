//! Helpers of the PostgreSQL tests: the server's URL (from `SAGA_PG_URL`,
//! or the throwaway cluster of `scripts/pg.sh`, started if needed, so the
//! tests never skip silently), a schema per test, the `pg_worker` helper
//! processes and the ledger's verdict.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

/// The server's URL: `SAGA_PG_URL`, or `scripts/pg.sh start`'s. A cluster
/// the tests start is theirs: it stops once no test process has been alive
/// for 10 s (`SAGA_PG_USER_PID`, see the script).
pub fn pg_url() -> String {
    if let Some(url) = std::env::var("SAGA_PG_URL").ok().filter(|u| !u.is_empty()) {
        return url;
    }
    script("start")
}

/// Runs `scripts/pg.sh <command>` and returns its output's last line.
pub fn script(command: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/pg.sh"))
        .arg(command)
        .current_dir(root)
        .env("SAGA_PG_USER_PID", std::process::id().to_string())
        .output()
        .expect("running scripts/pg.sh");
    assert!(
        out.status.success(),
        "scripts/pg.sh {command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A schema name of its own for one test (the store's tables go there,
/// the ledger's in `<schema>_fx`).
pub fn fresh_schema(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t_{test}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A client of the server, for the tests' own queries.
pub async fn client(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Creates the ledger of `schema` (see `tests/bin/pg_worker.rs`).
pub async fn create_ledger(client: &Client, schema: &str) {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}_fx;
             CREATE TABLE {schema}_fx.calls (n BIGSERIAL PRIMARY KEY, effect TEXT NOT NULL, pid BIGINT NOT NULL);
             CREATE TABLE {schema}_fx.effects (effect TEXT PRIMARY KEY);"
        ))
        .await
        .unwrap();
}

/// A `pg_worker` process, its stdout read line by line on a thread.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Waits for a line starting with `prefix` (panics after `limit`).
    pub fn wait_line(&self, prefix: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no `{prefix}` line from pg_worker: {e}"),
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reader(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `pg_worker <url> <schema> <args...>`.
pub fn spawn(url: &str, schema: &str, args: &[String]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pg_worker"))
        .arg(url)
        .arg(schema)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting pg_worker");
    let lines = reader(child.stdout.take().unwrap());
    Proc { child, lines }
}

/// Submits `count` executions through a `pg_worker submit` process.
pub fn submit(url: &str, schema: &str, count: u64, args: &[String]) {
    let mut all = vec!["submit".to_owned(), count.to_string()];
    all.extend_from_slice(args);
    let proc = spawn(url, schema, &all);
    let out = proc.child.wait_with_output().unwrap();
    assert!(out.status.success(), "pg_worker submit failed");
}

/// Counts of executions by status.
pub async fn statuses(client: &Client, schema: &str) -> Vec<(String, i64)> {
    client
        .query(
            &format!(
                "SELECT status, count(*) FROM {schema}.executions GROUP BY status ORDER BY status"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// How many executions are running or compensating; the server's error
/// if the query fails (a caller right after a restart tries again).
pub async fn unfinished(client: &Client, schema: &str) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {schema}.executions WHERE status IN ('running', 'compensating')"
            ),
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// What the ledger says at the end.
#[derive(Debug)]
pub struct Verdict {
    pub completed: i64,
    pub compensated: i64,
    pub calls: i64,
    pub effects: i64,
    /// Invocations the ledger absorbed (calls of a key already applied).
    pub absorbed: i64,
}

/// Checks every execution ended completed or compensated, and the ledger:
/// a completed execution has each step's effect and no undo; a
/// compensated one has an undo for every effect applied; every effect of
/// a step has a `step_started` event in the log (no step ran whose start
/// was not recorded).
pub async fn verdict(client: &Client, schema: &str, steps: usize) -> Verdict {
    let q = |sql: String| async move {
        client
            .query_one(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get::<_, i64>(0)
    };
    let other = q(format!(
        "SELECT count(*) FROM {schema}.executions WHERE status NOT IN ('completed', 'compensated')"
    ))
    .await;
    assert_eq!(
        other,
        0,
        "executions neither completed nor compensated: {:?}",
        statuses(client, schema).await
    );
    let completed = q(format!(
        "SELECT count(*) FROM {schema}.executions WHERE status = 'completed'"
    ))
    .await;
    let compensated = q(format!(
        "SELECT count(*) FROM {schema}.executions WHERE status = 'compensated'"
    ))
    .await;
    let keys = |prefix: &str| {
        format!(
            "SELECT e.id || '/s' || g.i AS key FROM {schema}.executions e, generate_series(0, {}) g(i)
             WHERE e.status = '{prefix}'",
            steps - 1
        )
    };
    let lost = q(format!(
        "SELECT count(*) FROM ({}) k WHERE NOT EXISTS
            (SELECT 1 FROM {schema}_fx.effects f WHERE f.effect = 'do:' || k.key)",
        keys("completed")
    ))
    .await;
    assert_eq!(lost, 0, "effects of completed executions missing");
    let undone = q(format!(
        "SELECT count(*) FROM ({}) k WHERE EXISTS
            (SELECT 1 FROM {schema}_fx.effects f WHERE f.effect = 'undo:' || k.key)",
        keys("completed")
    ))
    .await;
    assert_eq!(undone, 0, "a completed execution had an effect undone");
    let left = q(format!(
        "SELECT count(*) FROM ({}) k WHERE
            EXISTS (SELECT 1 FROM {schema}_fx.effects f WHERE f.effect = 'do:' || k.key)
            AND NOT EXISTS (SELECT 1 FROM {schema}_fx.effects f WHERE f.effect = 'undo:' || k.key)",
        keys("compensated")
    ))
    .await;
    assert_eq!(left, 0, "a compensated execution kept an effect");
    let unrecorded = q(format!(
        "SELECT count(*) FROM {schema}_fx.calls c WHERE c.effect LIKE 'do:%' AND NOT EXISTS (
            SELECT 1 FROM {schema}.events ev
            WHERE ev.kind = 'step_started'
              AND 'do:' || ev.execution_id || '/s' || ev.step = c.effect)"
    ))
    .await;
    assert_eq!(unrecorded, 0, "a step ran whose start was not recorded");
    let calls = q(format!("SELECT count(*) FROM {schema}_fx.calls")).await;
    let effects = q(format!("SELECT count(*) FROM {schema}_fx.effects")).await;
    Verdict {
        completed,
        compensated,
        calls,
        effects,
        absorbed: calls - effects,
    }
}

/// Waits until no execution is unfinished, calling `tick` between looks;
/// panics after `limit` with the statuses.
pub async fn wait_finished(client: &Client, schema: &str, limit: Duration, mut tick: impl FnMut()) {
    let end = Instant::now() + limit;
    while unfinished(client, schema).await.unwrap() > 0 {
        assert!(
            Instant::now() < end,
            "executions still unfinished after {limit:?}: {:?}",
            statuses(client, schema).await
        );
        tick();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A small deterministic generator (splitmix64), seeded for replay.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed: `SAGA_CHAOS_SEED` to replay, else from the clock.
pub fn seed() -> u64 {
    std::env::var("SAGA_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

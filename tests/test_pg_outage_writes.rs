//! Writes while the PostgreSQL server cannot be reached: a service that
//! submits at every request must not make one connection attempt and log
//! one warning per write (a soak's 60 s outage logged 181 warnings at 3
//! submits a second; 100 submits a second for 10 s gave 1,001). The
//! server is put out of reach by a proxy between the store and it, which
//! the test opens and closes.
#![cfg(feature = "postgres")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use saga_core::store::{PostgresOptions, PostgresStore, StoreError};
use saga_core::{Context, EngineError, Saga, SagaEngine, Step, StepError, StepInfo};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to the server: while `open`, it forwards every connection;
/// closed, it cuts those it forwards and drops each new one at once,
/// counting them (a server out of reach, each attempt seen).
struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    /// Bumped at each close: forwarding tasks of an older one stop.
    closes: Arc<AtomicUsize>,
}

impl Proxy {
    async fn to(server: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            open: Arc::new(AtomicBool::new(true)),
            refused: Arc::new(AtomicUsize::new(0)),
            closes: Arc::new(AtomicUsize::new(0)),
        };
        let (open, refused, closes) = (
            Arc::clone(&proxy.open),
            Arc::clone(&proxy.refused),
            Arc::clone(&proxy.closes),
        );
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !open.load(Ordering::SeqCst) {
                    refused.fetch_add(1, Ordering::SeqCst);
                    drop(inbound);
                    continue;
                }
                let closes = Arc::clone(&closes);
                let at = closes.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(server).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        while closes.load(Ordering::SeqCst) == at {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = cut => {}
                    }
                });
            }
        });
        proxy
    }

    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.closes.fetch_add(1, Ordering::SeqCst);
    }

    fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!("{scheme}://{}{addr}/{path}", user.unwrap_or_default())
}

fn server_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_costs_a_warning_and_a_connection_a_second_not_one_per_write() {
    support::logs::install_logger(log::LevelFilter::Info);
    let url = support::pg::pg_url();
    let proxy = Proxy::to(server_addr(&url)).await;
    let schema = support::pg::fresh_schema("outage_writes");
    let store = PostgresStore::connect_with(
        &through(&url, proxy.addr),
        PostgresOptions::new().with_schema(&schema),
    )
    .await
    .unwrap();
    let described = saga_core::store::SagaStore::describe(&store);
    let engine = SagaEngine::new(store);
    engine
        .register(
            Saga::<Context>::builder("flood")
                .step(Step::new("noop", |_: &mut Context, _: &StepInfo<'_>| {
                    Ok::<(), StepError>(())
                }))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    engine.submit("flood", Context::new()).await.unwrap();

    proxy.close();
    // The forwarded connections are cut within a few ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let mut failed = 0;
    for _ in 0..200 {
        match engine.submit("flood", Context::new()).await {
            Err(EngineError::Store(StoreError::Unavailable { .. })) => failed += 1,
            other => panic!("a submit while the server is away: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    assert_eq!(failed, 200);
    let warned: Vec<_> = support::logs::entries_where("store", &described)
        .into_iter()
        .filter(|e| e.message == "postgres store unreachable, writes fail until it is back")
        .collect();
    // One at the outage's start (and one more every 30 s).
    let told_again = elapsed.as_secs() / 30;
    assert!(
        warned.len() as u64 <= 1 + told_again,
        "{} warnings in {elapsed:?}",
        warned.len()
    );
    // The writer's attempts: one, then one per wait (100 ms doubling to
    // 1 s); the other connections (reads, the listener) try on their own.
    let attempts = proxy.refused.load(Ordering::SeqCst);
    let bound = 20 + 2 * elapsed.as_secs() as usize;
    assert!(
        attempts <= bound,
        "{attempts} connection attempts in {elapsed:?} for 200 writes"
    );

    proxy.reopen();
    let back = std::time::Instant::now();
    loop {
        match engine.submit("flood", Context::new()).await {
            Ok(_) => break,
            Err(error) => {
                assert!(back.elapsed() < Duration::from_secs(30), "{error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let reachable: Vec<_> = support::logs::entries_where("store", &described)
        .into_iter()
        .filter(|e| e.message == "postgres store reachable again, writes go on")
        .collect();
    assert_eq!(reachable.len(), 1, "{reachable:?}");
    assert!(
        reachable[0]
            .field("writes_refused")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 200),
        "{reachable:?}"
    );
}

//! `saga watch` through an outage of its PostgreSQL store: the real
//! binary, a real server, and between them a TCP relay of the test's that
//! drops every connection and refuses new ones for a while, as a network
//! or a restarting server does (without stopping the server the other
//! tests use).
#![cfg(feature = "postgres")]

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use saga_core::SagaEngine;
use saga_core::store::{PostgresOptions, PostgresStore};
use support::*;

/// A relay from a port of its own to the server's; [`Relay::cut`] closes
/// every connection and the port, [`Relay::mend`] opens the port again.
struct Relay {
    port: u16,
    server: String,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    fn to(server: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut relay = Relay {
            port,
            server: server.to_owned(),
            open: Arc::new(AtomicBool::new(true)),
            links: Arc::default(),
            acceptor: None,
        };
        relay.accept(listener);
        relay
    }

    /// Accepts on `listener` until cut, relaying each connection.
    fn accept(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let (open, links, server) = (
            Arc::clone(&self.open),
            Arc::clone(&self.links),
            self.server.clone(),
        );
        self.acceptor = Some(std::thread::spawn(move || {
            while open.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(upstream) = TcpStream::connect(&server) else {
                    continue;
                };
                let mut all = links.lock().unwrap();
                all.push(client.try_clone().unwrap());
                all.push(upstream.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        }));
    }

    /// Drops every relayed connection and closes the port.
    fn cut(&mut self) {
        self.open.store(false, Ordering::SeqCst);
        self.acceptor.take().unwrap().join().unwrap();
        for link in self.links.lock().unwrap().drain(..) {
            let _ = link.shutdown(Shutdown::Both);
        }
    }

    /// Opens the port again (a few tries: a client's connect in flight
    /// can hold it for a moment).
    fn mend(&mut self) {
        self.open.store(true, Ordering::SeqCst);
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => break listener,
                Err(error) if tries < 100 => {
                    tries += 1;
                    eprintln!("rebinding port {}: {error}", self.port);
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error) => panic!("port {} cannot be bound again: {error}", self.port),
            }
        };
        self.accept(listener);
    }
}

/// Copies `from` to `to` on a thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0_u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// Both watches (one execution, the whole store) go on through an
/// outage: each says once that the store cannot be reached, once that it
/// answers again, and then shows the execution's end, which happened
/// while it could not look.
#[tokio::test(flavor = "multi_thread")]
async fn watch_goes_on_through_an_outage_of_the_store() {
    let url = pg_url();
    let schema = format!("cli_outage_{}", std::process::id());
    let store = PostgresStore::connect_with(&url, PostgresOptions::new().with_schema(&schema))
        .await
        .unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let engine = SagaEngine::new(store);
    engine.register(gated_saga(&gate)).await.unwrap();
    let id = engine
        .start_with_id("gated", "pg-o-1", 0_u32)
        .await
        .unwrap();

    let server = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    let mut relay = Relay::to(&server);
    let relayed = url.replace(&server, &format!("127.0.0.1:{}", relay.port));
    let watch = |args: &[&str]| {
        let mut all = vec!["--store", relayed.as_str(), "--pg-schema", schema.as_str()];
        all.extend_from_slice(&["watch", "--interval", "100"]);
        all.extend_from_slice(args);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_saga"))
            .args(&all)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut child);
        (child, lines)
    };
    let (mut one, one_lines) = watch(&["pg-o-1"]);
    let (mut all, all_lines) = watch(&[]);
    until(&one_lines, "watching execution `pg-o-1`");
    until(&all_lines, "  pg-o-1  gated  running");

    relay.cut();
    for lines in [&one_lines, &all_lines] {
        let seen = until(lines, "is unreachable while");
        let said = seen.last().unwrap();
        assert!(said.contains("still watching"), "{said}");
    }
    // The execution ends while the watches cannot look.
    gate.add_permits(1);
    engine.wait(&id).await.unwrap();
    std::thread::sleep(Duration::from_millis(500));
    relay.mend();

    // Each watch says once that the store answers again (the outage was
    // said once, before), then shows the end it missed.
    for (lines, end) in [
        (&one_lines, "ended completed"),
        (&all_lines, "  pg-o-1  gated  completed"),
    ] {
        let seen = until(lines, end);
        assert!(
            seen.iter().any(|l| l == "the store answers again"),
            "{seen:#?}"
        );
        assert_eq!(
            seen.iter().filter(|l| l.contains("unreachable")).count(),
            0,
            "the outage is said once: {seen:#?}"
        );
    }
    assert_eq!(one.wait().unwrap().code(), Some(0));
    all.kill().unwrap();
    let _ = all.wait();
}

//! The PostgreSQL store's listener: `LISTEN`s for new work and status
//! changes and turns each notification into a bump of the work signal
//! (new work only) and of the change signal (both).

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::session::{error_text, open};
use super::{CHANNEL, Inner, STATUS_CHANNEL};
use crate::escape::Escaped;

/// The listener: `LISTEN`s on its own connection and bumps the work
/// signal on each notification of this schema; reconnects with backoff
/// when the connection is lost (and bumps the signal then, since
/// notifications sent meanwhile were missed). The change signal is bumped
/// when the connection is lost too: a watcher looks, and finds the outage
/// at once instead of at its next safety poll.
pub(super) async fn listener_loop(inner: Weak<Inner>, stop: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(store) = inner.upgrade() else {
            return;
        };
        let opened = open(&store.target, &store.describe, &store.schema, true).await;
        let (session, mut notifications) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                log::warn!(target: "saga", store:% = Escaped(&store.describe), retry_in:? = backoff, error:% = Escaped(&error.to_string()); "postgres store unreachable, listening again later");
                drop(store);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.notified() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = session
            .client
            .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {STATUS_CHANNEL}"))
            .await
        {
            log::warn!(target: "saga", store:% = Escaped(&store.describe), error:% = Escaped(&error_text(&e)); "postgres store listen failed");
            drop(store);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.notified() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        let listened = tokio::time::Instant::now();
        store.signal.send_modify(|n| *n = n.wrapping_add(1));
        store.changes.send_modify(|n| *n = n.wrapping_add(1));
        let schema = store.schema.clone();
        drop(store);
        loop {
            tokio::select! {
                n = notifications.recv() => match n {
                    Some(n) if n.payload() == schema => {
                        let Some(store) = inner.upgrade() else { return };
                        if n.channel() == CHANNEL {
                            store.signal.send_modify(|n| *n = n.wrapping_add(1));
                        }
                        store.changes.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    Some(_) => {}
                    None => break,
                },
                () = stop.notified() => return,
            }
        }
        if let Some(store) = inner.upgrade() {
            log::warn!(target: "saga", store:% = Escaped(&store.describe); "postgres store listener lost its connection, reconnecting");
            store.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        if listened.elapsed() >= Duration::from_secs(1) {
            backoff = Duration::from_millis(100);
        } else {
            // A connection that dies as soon as it listens (a server
            // shutting down, a proxy that drops it): back off instead of
            // reconnecting, and waking every watcher, in a loop.
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.notified() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

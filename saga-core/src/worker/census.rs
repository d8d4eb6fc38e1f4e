//! The worker's census of executions that no process seems to run:
//! unfinished, free (no owner, or a lease that expired), of a definition
//! its engine has not registered, and unchanged since the census before.
//! The worker cannot run them, and if no other process can either (a
//! version dropped in a deploy) they would wait in silence: `wait` never
//! ends, and nothing is stuck for an alert to find. The census warns, once
//! per definition and again every [`REMIND`] while it still sees them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::SagaEngine;
use crate::escape::Escaped;
use crate::id::ExecutionId;
use crate::status::ExecutionStatus;
use crate::store::{ListQuery, now_ms};

/// How many executions of each unfinished status one census reads at most.
const LIMIT: usize = 1000;

/// How often a definition still waiting is warned about again.
const REMIND: Duration = Duration::from_secs(600);

/// What the censuses saw.
#[derive(Default)]
pub(super) struct Census {
    /// The free executions of unregistered definitions at the last
    /// census, with the end of their log then.
    seen: HashMap<ExecutionId, u64>,
    /// When each definition was last warned about.
    warned: HashMap<String, Instant>,
}

impl Census {
    /// Reads the unfinished executions and warns about the definitions
    /// whose executions waited, untouched, since the last census. A store
    /// error skips this census (the worker's claims report outages).
    pub(super) async fn take(&mut self, engine: &SagaEngine) {
        let registered = engine.fingerprints();
        let now = now_ms();
        let mut free = HashMap::new();
        // By (saga, definition): the executions that waited.
        let mut waiting: BTreeMap<(String, String), usize> = BTreeMap::new();
        for status in [ExecutionStatus::Running, ExecutionStatus::Compensating] {
            let query = ListQuery::new().with_status(status).with_limit(LIMIT);
            let Ok(page) = engine.store().list_summaries(query).await else {
                return;
            };
            for s in page {
                let held = s.owner.is_some() && s.lease_expires_at_ms.is_some_and(|t| t > now);
                if held || registered.contains(&s.fingerprint) {
                    continue;
                }
                if self.seen.get(&s.id) == Some(&s.last_seq) {
                    *waiting.entry((s.saga, s.fingerprint)).or_default() += 1;
                }
                free.insert(s.id, s.last_seq);
            }
        }
        self.seen = free;
        let at = Instant::now();
        self.warned
            .retain(|fingerprint, _| waiting.keys().any(|(_, waited)| waited == fingerprint));
        for ((saga, fingerprint), count) in waiting {
            if self
                .warned
                .get(&fingerprint)
                .is_some_and(|last| at.duration_since(*last) < REMIND)
            {
                continue;
            }
            self.warned.insert(fingerprint.clone(), at);
            let versions = engine.version_labels_of(&saga);
            let registered = if versions.is_empty() {
                "no version of it".to_owned()
            } else {
                format!("its versions {}", versions.join(", "))
            };
            // The version the waiting definition declared, if the store
            // has its shape and it declared one.
            let declared = match engine.store().definition(&fingerprint).await {
                Ok(Some(definition)) => definition.version().ok().flatten(),
                _ => None,
            };
            log::warn!(
                target: "saga",
                owner:% = Escaped(engine.owner()),
                saga:% = Escaped(&saga),
                fingerprint:% = Escaped(&fingerprint),
                executions = count;
                "{count} execution{} of saga `{}` {} for a worker with definition {}{}, which this process has not registered (it registers {registered}); if no other process runs that version, deploy a build that registers it beside yours (the version new executions should start on registered last), or give them up with `abandon`, which compensates nothing",
                if count == 1 { "" } else { "s" },
                Escaped(&saga),
                if count == 1 { "waits" } else { "wait" },
                Escaped(&fingerprint),
                crate::engine::declared(declared.as_deref()),
            );
        }
    }
}

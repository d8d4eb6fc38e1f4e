//! The worker's census of executions that no process seems to run:
//! unfinished, free (no owner, or a lease that expired), of a definition
//! its engine has not registered, and unchanged since the census before,
//! while no execution of that definition is held or moved on meanwhile
//! (a process that runs the version, busy, is not a dropped version).
//! The worker cannot run them, and if no other process can either (a
//! version dropped in a deploy) they would wait in silence: `wait` never
//! ends, and nothing is stuck for an alert to find. The census warns, once
//! per definition and again every [`REMIND`] while it still sees them.
//!
//! The same for two other kinds of work left to no one: executions this
//! worker refused (their log or context does not fit this build) that
//! still wait, free, or whose resume request it refused (stuck ones);
//! and operators' resume requests of definitions this process has not
//! registered, unchanged since the census before (while no execution of
//! that definition is held or moved on, as above).

use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// The resume requests of unregistered definitions at the last
    /// census.
    requests: HashSet<ExecutionId>,
    /// When each warning (by its [`Topic`]) was last given.
    warned: HashMap<Topic, Instant>,
}

/// What a warning is about, for its reminders.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Topic {
    /// Executions of a definition (fingerprint) nobody runs.
    Orphans(String),
    /// Resume requests of a definition (fingerprint) nobody runs.
    Requests(String),
    /// Executions of a saga this worker refused.
    Refused(String),
}

impl Census {
    /// Reads the unfinished executions and the resume requests, and warns
    /// about the work left to no one: the definitions whose executions
    /// (or resume requests) waited, untouched, since the last census, and
    /// the executions of `refused` (this worker's refusals) still free or
    /// with a resume request still pending. A
    /// store error skips this census (the worker's claims report outages).
    pub(super) async fn take(&mut self, engine: &SagaEngine, refused: &HashSet<ExecutionId>) {
        let registered = engine.fingerprints();
        let now = now_ms();
        let mut free = HashMap::new();
        // By (saga, definition): the executions that waited.
        let mut waiting: BTreeMap<(String, String), usize> = BTreeMap::new();
        // The definitions some process runs: one of their executions is
        // held, or moved on since the last census.
        let mut alive: HashSet<String> = HashSet::new();
        // By saga: the refused executions still free, and the first.
        let mut left: BTreeMap<String, (usize, ExecutionId)> = BTreeMap::new();
        let mut counted: HashSet<ExecutionId> = HashSet::new();
        for status in [ExecutionStatus::Running, ExecutionStatus::Compensating] {
            let query = ListQuery::new().with_status(status).with_limit(LIMIT);
            let Ok(page) = engine.store().list_summaries(query).await else {
                return;
            };
            for s in page {
                let held = s.owner.is_some() && s.lease_expires_at_ms.is_some_and(|t| t > now);
                if registered.contains(&s.fingerprint) {
                    if !held && refused.contains(&s.id) {
                        left.entry(s.saga).or_insert((0, s.id.clone())).0 += 1;
                        counted.insert(s.id);
                    }
                    continue;
                }
                if held {
                    alive.insert(s.fingerprint);
                    continue;
                }
                match self.seen.get(&s.id) {
                    Some(&seq) if seq == s.last_seq => {
                        *waiting.entry((s.saga, s.fingerprint)).or_default() += 1;
                    }
                    Some(_) => {
                        alive.insert(s.fingerprint.clone());
                    }
                    None => {}
                }
                free.insert(s.id, s.last_seq);
            }
        }
        // The resume requests of unregistered definitions seen at the last
        // census too: nobody carried them out meanwhile.
        let Ok(requests) = engine.store().resume_requests().await else {
            return;
        };
        self.seen = free;
        waiting.retain(|(_, fingerprint), _| !alive.contains(fingerprint));
        let mut requested: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut pending = HashSet::new();
        for r in requests {
            if registered.contains(&r.fingerprint) {
                // A request this worker refused (a stuck execution whose
                // log does not fit this build): nobody here carries it out.
                if refused.contains(&r.id) && counted.insert(r.id.clone()) {
                    left.entry(r.saga).or_insert((0, r.id)).0 += 1;
                }
                continue;
            }
            if self.requests.contains(&r.id) {
                *requested.entry((r.saga, r.fingerprint)).or_default() += 1;
            }
            pending.insert(r.id);
        }
        self.requests = pending;
        // A busy process of that version carries them out once it has room.
        requested.retain(|(_, fingerprint), _| !alive.contains(fingerprint));
        let at = Instant::now();
        let topics: HashSet<Topic> = waiting
            .keys()
            .map(|(_, f)| Topic::Orphans(f.clone()))
            .chain(requested.keys().map(|(_, f)| Topic::Requests(f.clone())))
            .chain(left.keys().map(|saga| Topic::Refused(saga.clone())))
            .collect();
        self.warned.retain(|topic, _| topics.contains(topic));
        let mut due = |topic: Topic| {
            let quiet = self
                .warned
                .get(&topic)
                .is_some_and(|last| at.duration_since(*last) < REMIND);
            if !quiet {
                self.warned.insert(topic, at);
            }
            !quiet
        };
        for (saga, (count, first)) in left {
            if !due(Topic::Refused(saga.clone())) {
                continue;
            }
            log::warn!(
                target: "saga",
                owner:% = Escaped(engine.owner()),
                saga:% = Escaped(&saga),
                execution:% = Escaped(first.as_str()),
                executions = count;
                "{count} execution{} of saga `{}` that this worker refused (its log or context does not fit this build; the error was logged at the refusal) {} unfinished with no owner, `{}` first: a process of the build that started {} can carry {} on; else make the types accept what is stored (serde `default`, `alias`) and restart this process, or give {} up with `abandon`, which compensates nothing",
                if count == 1 { "" } else { "s" },
                Escaped(&saga),
                if count == 1 { "waits" } else { "wait" },
                Escaped(first.as_str()),
                if count == 1 { "it" } else { "them" },
                if count == 1 { "it" } else { "them" },
                if count == 1 { "it" } else { "them" },
            );
        }
        for ((saga, fingerprint), count) in requested {
            if !due(Topic::Requests(fingerprint.clone())) {
                continue;
            }
            log::warn!(
                target: "saga",
                owner:% = Escaped(engine.owner()),
                saga:% = Escaped(&saga),
                fingerprint:% = Escaped(&fingerprint),
                executions = count;
                "{count} resume request{} of saga `{}` {} for a worker with definition {}, which this process has not registered; if no other process runs that version, deploy a build that registers it beside yours, or give the execution{} up with `abandon`, which compensates nothing",
                if count == 1 { "" } else { "s" },
                Escaped(&saga),
                if count == 1 { "waits" } else { "wait" },
                Escaped(&fingerprint),
                if count == 1 { "" } else { "s" },
            );
        }
        for ((saga, fingerprint), count) in waiting {
            if !due(Topic::Orphans(fingerprint.clone())) {
                continue;
            }
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

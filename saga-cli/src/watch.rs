//! `saga watch`: follow one execution until it ends, or the whole store.
//!
//! On SQLite both look at the store every `--interval` milliseconds (a
//! file has no way to tell another process it changed). On PostgreSQL
//! the store `LISTEN`s ([`SagaStore::change_signal`]): the store watch
//! looks when an execution is created, changes status, has a cancel
//! requested or ends, and otherwise only every [`SAFETY_POLL`]; the
//! execution watch looks at once on those too, and every `--interval`
//! for its step events, which do not notify (a notification per step
//! transition would make PostgreSQL take a database-wide lock at every
//! commit).
//!
//! The store watch reads every execution's summary once, to count them;
//! each later look reads only what can have changed: the executions
//! created since (from a few seconds before the newest it saw, for those
//! another process created in the same millisecond or with a clock a
//! little behind), and the ones whose status can still change (running,
//! compensating, stuck). It remembers no more than those.
//!
//! A watch outlives an outage of its store (a PostgreSQL server that
//! restarts or refuses connections, a connection it closes): once it has started, a read that finds
//! the store unreachable prints one line saying so, the watch looks again
//! every `--interval`, and prints one line when the store answers again.
//! Any other error ends the watch.
//!
//! [`SagaStore::change_signal`]: saga_core::store::SagaStore::change_signal

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use saga_core::escape::Escaped;
use saga_core::store::{ExecutionSummary, ListCursor, ListQuery, StoreError};
use saga_core::{EngineError, ExecutionId, ExecutionStatus, SagaEngine};
use tokio::sync::watch;

use crate::output::{Style, now_ms, utc};
use crate::show::{Timeline, event_json};
use crate::{CliError, execution_record};

/// How often the store watch looks at a store that signals changes, in
/// case a notification was missed (a lost connection is signalled too).
const SAFETY_POLL: Duration = Duration::from_secs(30);

/// Waits `every`, or less when the store signals a change.
async fn pause(signal: &mut Option<watch::Receiver<u64>>, every: Duration) {
    let Some(changes) = signal.as_mut() else {
        tokio::time::sleep(every).await;
        return;
    };
    tokio::select! {
        changed = changes.changed() => {
            if changed.is_err() {
                // The store stopped signalling: polling remains.
                *signal = None;
            }
        }
        () = tokio::time::sleep(every) => {}
    }
}

/// Whether the store answered the watch's last read: a watch goes on
/// through an outage and says when it began and ended.
#[derive(Default)]
struct Reach {
    /// The last read found the store unreachable.
    lost: bool,
}

impl Reach {
    /// The value of a read that succeeded; `None` if the store could not
    /// be reached (said once per outage); the error of any other failure.
    fn read<T>(
        &mut self,
        result: Result<T, CliError>,
        json: bool,
        out: &mut dyn Write,
    ) -> Result<Option<T>, CliError> {
        match result {
            Ok(value) => {
                if self.lost {
                    self.lost = false;
                    let line = if json {
                        json_line(&serde_json::json!({ "store": "reachable" }))
                    } else {
                        "the store answers again".to_owned()
                    };
                    emit(out, &line)?;
                }
                Ok(Some(value))
            }
            Err(error) if unreachable(&error) => {
                if !self.lost {
                    self.lost = true;
                    let line = if json {
                        json_line(&serde_json::json!({
                            "store": "unreachable",
                            "error": error.to_string(),
                        }))
                    } else {
                        format!("{error}; still watching: looking again until it answers")
                    };
                    emit(out, &line)?;
                }
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

/// The store could not be reached: an outage a watch waits out.
fn unreachable(error: &CliError) -> bool {
    matches!(
        error,
        CliError::Store(StoreError::Unavailable { .. })
            | CliError::Engine(EngineError::Store(StoreError::Unavailable { .. }))
    )
}

/// Writes `line` and a newline to `out`, at once (a person is watching).
fn emit(out: &mut dyn Write, line: &str) -> Result<(), CliError> {
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// One JSON document on one line (`--json`: JSON lines).
fn json_line(value: &impl serde::Serialize) -> String {
    // Serializing strings, numbers and booleans cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Prints execution `id`'s events as they are logged, as `show`'s
/// timeline does (with `json`: one `show --json` event a line, then
/// `{"ended": "<status>"}`; `{"store": "unreachable", "error": ...}` and
/// `{"store": "reachable"}` around an outage), and returns when the execution has ended
/// (stuck counts: it waits for an operator).
pub(crate) async fn execution(
    engine: &SagaEngine,
    id: &str,
    every: Duration,
    json: bool,
    style: Style,
    out: &mut dyn Write,
) -> Result<String, CliError> {
    let record = execution_record(engine, id).await?;
    // The definition's step names, for the lines.
    let steps: Vec<String> = engine
        .report(&record.id)
        .await?
        .steps
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    if !json {
        emit(
            out,
            &format!(
                "watching execution `{}` of saga `{}` (seconds since its start)",
                Escaped(record.id.as_str()),
                Escaped(&record.saga)
            ),
        )?;
    }
    let mut signal = engine.store().change_signal();
    let mut seen = 0_u64;
    let mut timeline = Timeline::default();
    let mut reach = Reach::default();
    // A cancel request is a mark on the execution, not an event of its
    // log: told once, when first seen (at the time the watch saw it).
    let mut cancel_told = false;
    loop {
        let Some((record, events)) = reach.read(crate::record(engine, id).await, json, out)? else {
            pause(&mut signal, every).await;
            continue;
        };
        // Before this read's events (which may be what it led to), and
        // only while it can still act: on an ended execution the log's
        // events say what came of it.
        if record.cancel_requested
            && !record.status.is_finished()
            && !std::mem::replace(&mut cancel_told, true)
        {
            let at_ms = now_ms();
            let line = if json {
                json_line(&serde_json::json!({ "kind": "cancel_requested", "seen_at_ms": at_ms }))
            } else {
                let offset = (at_ms - record.created_at_ms) as f64 / 1000.0;
                format!("{offset:>9.3}  cancel_requested (seen by this watch)")
            };
            emit(out, &line)?;
        }
        let before = seen;
        for e in events.iter().filter(|e| e.seq > before) {
            let step = e
                .step
                .and_then(|s| steps.get(s as usize))
                .map(String::as_str);
            let line = if json {
                json_line(&event_json(e, step))
            } else {
                timeline.line(e, record.created_at_ms, step)
            };
            emit(out, &line)?;
            seen = e.seq;
        }
        if record.status.is_finished() {
            if json {
                let end = serde_json::json!({ "ended": record.status.label() });
                return Ok(json_line(&end) + "\n");
            }
            return Ok(format!(
                "ended {}\n",
                style.paint(record.status, record.status.label())
            ));
        }
        pause(&mut signal, every).await;
    }
}

/// Prints a line for every execution that appears in the store or changes
/// status, until the process is stopped; starts with the unfinished ones.
/// With `json`, each line is `{"id", "saga", "status", "updated_at_ms"}`.
///
/// The first look reads every summary (to count them); each later look
/// reads only what can have changed (see [`Looks`]), so a store of many
/// finished executions costs a watch little.
pub(crate) async fn store(
    engine: &SagaEngine,
    every: Duration,
    json: bool,
    style: Style,
    out: &mut dyn Write,
) -> Result<String, CliError> {
    let mut signal = engine.store().change_signal();
    // The first read's error ends the watch: nothing was watched yet.
    let (mut looks, first) = Looks::first(engine).await?;
    if !json {
        emit(
            out,
            &format!(
                "watching the store: {} execution{}, {} unfinished; Ctrl-C stops",
                first.total,
                if first.total == 1 { "" } else { "s" },
                first.unfinished.len()
            ),
        )?;
    }
    for r in &first.unfinished {
        emit(out, &store_line(r, json, style))?;
    }
    drop(first);
    let mut reach = Reach::default();
    loop {
        let read = loop {
            // Through an outage, look every `every`: the listener
            // signals its reconnection only after its own backoff.
            let wait = if signal.is_some() && !reach.lost {
                SAFETY_POLL
            } else {
                every
            };
            pause(&mut signal, wait).await;
            if let Some(read) = reach.read(looks.read(engine).await, json, out)? {
                break read;
            }
        };
        for r in looks.changed(read) {
            emit(out, &store_line(&r, json, style))?;
        }
    }
}

/// The store watch's line for execution `r`.
fn store_line(r: &ExecutionSummary, json: bool, style: Style) -> String {
    if json {
        return json_line(&serde_json::json!({
            "id": r.id.as_str(),
            "saga": r.saga,
            "status": r.status.label(),
            "updated_at_ms": r.updated_at_ms,
        }));
    }
    format!(
        "{}  {}  {}  {}",
        utc(r.updated_at_ms, true),
        Escaped(r.id.as_str()),
        Escaped(&r.saga),
        style.paint(r.status, r.status.label())
    )
}

/// How many summaries a listing reads at a time. Large: on SQLite each
/// page after the first walks the creation index from its start.
const PAGE: usize = 5_000;

/// How far back in creation time each look of the store watch lists
/// again, in milliseconds, from where the writers' clocks stood when the
/// previous look began: an execution that another process created just
/// before that look but committed after it, or created with a clock a
/// little behind the others, must not be missed.
const LOOK_BACK_MS: i64 = 5_000;

/// Up to this many executions whose status can change are read one by
/// one at each look (a lookup by key each); more are found by listings
/// of their statuses (a scan each on SQLite, however few match).
const BY_ID_AT_MOST: usize = 64;

/// Whether an execution of `status` can still change status: unfinished,
/// or stuck (an operator resumes or abandons it). The others never do.
fn may_change(status: ExecutionStatus) -> bool {
    !status.is_finished() || status == ExecutionStatus::Stuck
}

/// What the store watch's first look found.
struct FirstLook {
    /// How many executions the store has.
    total: usize,
    /// The unfinished ones (running or compensating), oldest first.
    unfinished: Vec<ExecutionSummary>,
}

/// What the store watch remembers between looks: only the executions
/// whose status can change, and those created at or after its floor
/// (which the next look lists again, and must not print twice). A
/// finished execution created before the floor is forgotten: it can
/// neither change nor be listed again.
///
/// The floor follows the writers' clocks as the watch can tell them
/// (an execution's creation time is its writer's clock when it was
/// created, before the watch read it) and advances with the watch's own
/// monotonic time, so a store where nothing is created is listed from a
/// few seconds back, however many executions a burst created before.
struct Looks {
    /// Each remembered execution's last status and creation time.
    known: HashMap<ExecutionId, (ExecutionStatus, i64)>,
    /// The watch's monotonic time, from its start.
    origin: Instant,
    /// How far the writers' clocks are at least ahead of [`Self::origin`]'s
    /// time, in milliseconds: the largest creation time read, less the
    /// time when it was read. `None` until an execution was read.
    ahead_ms: Option<i64>,
    /// The next look lists the executions created at or after this time
    /// (all of them for `None`). It only grows: what one look forgot,
    /// the next must not list again.
    floor_ms: Option<i64>,
}

/// What one look read.
struct Read {
    /// Summaries, in the order they were read.
    summaries: Vec<ExecutionSummary>,
    /// Executions remembered that the store no longer has (purged).
    gone: Vec<ExecutionId>,
    /// When the look began: the watch's time, and the wall clock.
    began_ms: i64,
    began_wall_ms: i64,
    /// When its last read answered, the watch's time.
    ended_ms: i64,
    /// The newest creation time it listed.
    newest_ms: Option<i64>,
}

impl Looks {
    /// Reads every summary, a page at a time, keeping what later looks
    /// need.
    async fn first(engine: &SagaEngine) -> Result<(Self, FirstLook), CliError> {
        let mut looks = Looks {
            known: HashMap::new(),
            origin: Instant::now(),
            ahead_ms: None,
            floor_ms: None,
        };
        let mut first = FirstLook {
            total: 0,
            unfinished: Vec::new(),
        };
        let began_ms = looks.elapsed_ms();
        let began_wall_ms = now_ms();
        let mut query = ListQuery::new().with_limit(PAGE);
        loop {
            let page = engine.store().list_summaries(query.clone()).await?;
            let ended_ms = looks.elapsed_ms();
            let last = page.last().map(ExecutionSummary::cursor);
            let full = page.len() == PAGE;
            first.total += page.len();
            looks.saw(page.iter().map(|r| r.created_at_ms).max(), ended_ms);
            for r in page {
                looks
                    .known
                    .insert(r.id.clone(), (r.status, r.created_at_ms));
                if !r.status.is_finished() {
                    first.unfinished.push(r);
                }
            }
            // A page read later gives the same floor or a higher one:
            // nothing forgotten here is listed again.
            looks.forget_old(began_ms, began_wall_ms);
            match last {
                Some(cursor) if full => query = query.with_after(cursor),
                _ => return Ok((looks, first)),
            }
        }
    }

    /// Milliseconds of the watch's monotonic time.
    fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Learns from a read that listed an execution created at `newest`
    /// and answered at `ended_ms` how far the writers' clocks are at
    /// least ahead.
    fn saw(&mut self, newest: Option<i64>, ended_ms: i64) {
        if let Some(newest) = newest {
            let ahead = newest.saturating_sub(ended_ms);
            self.ahead_ms = Some(self.ahead_ms.map_or(ahead, |a| a.max(ahead)));
        }
    }

    /// Whether `r` is new, or has changed status, since the last look.
    fn is_news(&self, r: &ExecutionSummary) -> bool {
        self.known
            .get(&r.id)
            .is_none_or(|(status, _)| *status != r.status)
    }

    /// Raises the floor to [`LOOK_BACK_MS`] before where the writers'
    /// clocks stood when the look began (`began_ms`; or before the wall
    /// clock then, if that is earlier: one writer with a clock far ahead
    /// must not hide the others' executions), and forgets the executions
    /// that can neither change nor be listed again.
    fn forget_old(&mut self, began_ms: i64, began_wall_ms: i64) {
        let Some(ahead) = self.ahead_ms else {
            return;
        };
        let writers = ahead.saturating_add(began_ms).min(began_wall_ms);
        let floor = writers.saturating_sub(LOOK_BACK_MS);
        let floor = self.floor_ms.map_or(floor, |f| f.max(floor));
        self.floor_ms = Some(floor);
        self.known
            .retain(|_, (status, created)| may_change(*status) || *created >= floor);
    }

    /// Reads what can have changed since the last look: the executions
    /// created at or after the floor, and those remembered whose status
    /// can change. An execution may come twice; the later read counts.
    async fn read(&self, engine: &SagaEngine) -> Result<Read, CliError> {
        let store = engine.store();
        let floor = self.floor_ms;
        let mut read = Read {
            summaries: Vec::new(),
            gone: Vec::new(),
            began_ms: self.elapsed_ms(),
            began_wall_ms: now_ms(),
            ended_ms: 0,
            newest_ms: None,
        };
        let mut query = ListQuery::new().with_limit(PAGE);
        if let Some(floor) = floor {
            // Every execution created at `floor` or later (an id sorts
            // after the empty one); those just before are dropped below.
            query = query.with_after(ListCursor {
                created_at_ms: floor.saturating_sub(1),
                id: ExecutionId::new(""),
            });
        }
        loop {
            let page = store.list_summaries(query.clone()).await?;
            let last = page.last().map(ExecutionSummary::cursor);
            let full = page.len() == PAGE;
            read.newest_ms = read
                .newest_ms
                .max(page.iter().map(|r| r.created_at_ms).max());
            // Only what is new or changed is kept: a burst of creations
            // is listed again at each look until the floor passes it.
            read.summaries.extend(
                page.into_iter()
                    .filter(|r| floor.is_none_or(|t| r.created_at_ms >= t) && self.is_news(r)),
            );
            match last {
                Some(cursor) if full => query = query.with_after(cursor),
                _ => break,
            }
        }
        let mut watched: Vec<&ExecutionId> = self
            .known
            .iter()
            .filter(|(_, (status, _))| may_change(*status))
            .map(|(id, _)| id)
            .collect();
        if watched.len() > BY_ID_AT_MOST {
            let mut listed = HashSet::new();
            for status in [
                ExecutionStatus::Running,
                ExecutionStatus::Compensating,
                ExecutionStatus::Stuck,
            ] {
                let mut query = ListQuery::new().with_status(status).with_limit(PAGE);
                loop {
                    let page = store.list_summaries(query.clone()).await?;
                    let last = page.last().map(ExecutionSummary::cursor);
                    let full = page.len() == PAGE;
                    listed.extend(page.iter().map(|r| r.id.clone()));
                    read.summaries
                        .extend(page.into_iter().filter(|r| self.is_news(r)));
                    match last {
                        Some(cursor) if full => query = query.with_after(cursor),
                        _ => break,
                    }
                }
            }
            // Those listed under none of them have finished (or were
            // purged): read one by one.
            watched.retain(|id| !listed.contains(*id));
        }
        for id in watched {
            match store.get(id).await? {
                Some(record) => read.summaries.push(ExecutionSummary::from(record)),
                None => read.gone.push(id.clone()),
            }
        }
        read.ended_ms = self.elapsed_ms();
        Ok(read)
    }

    /// The executions of `read` that are new or changed status since the
    /// last look, oldest first; remembers them.
    fn changed(&mut self, read: Read) -> Vec<ExecutionSummary> {
        for id in &read.gone {
            self.known.remove(id);
        }
        self.saw(read.newest_ms, read.ended_ms);
        // The later read of an execution counts.
        let mut latest: HashMap<ExecutionId, ExecutionSummary> = HashMap::new();
        for r in read.summaries {
            latest.insert(r.id.clone(), r);
        }
        let mut changed: Vec<ExecutionSummary> =
            latest.into_values().filter(|r| self.is_news(r)).collect();
        changed.sort_by(|a, b| {
            (a.created_at_ms, a.id.as_str()).cmp(&(b.created_at_ms, b.id.as_str()))
        });
        for r in &changed {
            self.known.insert(r.id.clone(), (r.status, r.created_at_ms));
        }
        self.forget_old(read.began_ms, read.began_wall_ms);
        changed
    }
}

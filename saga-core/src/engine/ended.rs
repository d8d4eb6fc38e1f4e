//! The ends of the runs this engine completed lately, kept for `wait`: a
//! `wait` called just after its run completed (a fast saga on a
//! multi-thread runtime ends before its caller waits) gets the run's own
//! report, as one called a moment earlier does, where it would read the
//! definition and the whole log to rebuild one.
//!
//! A kept end is used only while the execution's record says it completed
//! (so a purged execution is not found, and one created again with the
//! same id is waited for), and only for [`KEEP_FOR`] after its run ended;
//! this engine forgets it when it purges or creates an execution under
//! its id. An execution another engine purged and another created again,
//! and that completed again, within that time, would get the earlier
//! run's report.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Done;
use crate::id::ExecutionId;
use crate::report::SagaReport;

/// How many completed runs' ends are kept at most, the oldest forgotten
/// first.
pub(super) const MAX_KEPT: usize = 1024;

/// How long a completed run's end is kept.
pub(super) const KEEP_FOR: Duration = Duration::from_secs(10);

/// The ends of the last [`MAX_KEPT`] runs this engine completed, for [`KEEP_FOR`]
/// each.
#[derive(Default)]
pub(super) struct Ended {
    done: HashMap<ExecutionId, Kept>,
    /// The kept ids, oldest first.
    order: VecDeque<ExecutionId>,
}

struct Kept {
    done: watch::Receiver<Option<Done>>,
    at: Instant,
}

impl Ended {
    /// Keeps a completed run's end, forgetting the oldest beyond [`MAX_KEPT`]
    /// and those older than [`KEEP_FOR`]. An id kept again keeps its place in
    /// the order (it may be forgotten a little early).
    pub(super) fn keep(&mut self, id: ExecutionId, done: watch::Receiver<Option<Done>>) {
        let at = Instant::now();
        while let Some(oldest) = self.order.front() {
            let stale = self.done.get(oldest).is_none_or(|k| at - k.at >= KEEP_FOR);
            if !stale && self.order.len() < MAX_KEPT {
                break;
            }
            if let Some(oldest) = self.order.pop_front() {
                self.done.remove(&oldest);
            }
        }
        if self.done.insert(id.clone(), Kept { done, at }).is_none() {
            self.order.push_back(id);
        }
    }

    /// Forgets what is kept of `id` (an execution created again under it).
    pub(super) fn forget(&mut self, id: &ExecutionId) {
        if self.done.remove(id).is_some() {
            self.order.retain(|kept| kept != id);
        }
    }

    /// Forgets every kept end (the store may have purged them).
    pub(super) fn clear(&mut self) {
        self.done.clear();
        self.order.clear();
    }

    /// The report of a run of `id` this engine completed less than [`KEEP_FOR`]
    /// ago, if it is kept.
    pub(super) fn report(&self, id: &ExecutionId) -> Option<SagaReport> {
        let kept = self.done.get(id)?;
        if kept.at.elapsed() >= KEEP_FOR {
            return None;
        }
        match &*kept.done.borrow() {
            Some(Ok(report)) => Some(report.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ExecutionStatus;

    fn completed(name: &str) -> watch::Receiver<Option<Done>> {
        let report = SagaReport {
            saga: name.to_owned().into(),
            execution_id: ExecutionId::new("e"),
            status: ExecutionStatus::Completed,
            steps: Vec::new(),
            cancel_ignored: false,
            duration: Duration::ZERO,
        };
        watch::channel(Some(Ok(report))).1
    }

    fn ended(n: usize) -> Ended {
        let mut ended = Ended::default();
        for i in 0..n {
            ended.keep(
                ExecutionId::new(format!("e-{i}")),
                completed(&format!("run {i}")),
            );
        }
        ended
    }

    fn saga_of(ended: &Ended, id: &str) -> Option<String> {
        ended
            .report(&ExecutionId::new(id))
            .map(|r| r.saga.to_string())
    }

    #[test]
    fn the_oldest_end_is_forgotten_first() {
        let ended = ended(MAX_KEPT + 2);
        assert_eq!((ended.done.len(), ended.order.len()), (MAX_KEPT, MAX_KEPT));
        assert_eq!(saga_of(&ended, "e-0"), None);
        assert_eq!(saga_of(&ended, "e-1"), None);
        assert_eq!(saga_of(&ended, "e-2").as_deref(), Some("run 2"));
        let last = format!("e-{}", MAX_KEPT + 1);
        assert_eq!(
            saga_of(&ended, &last),
            Some(format!("run {}", MAX_KEPT + 1))
        );
    }

    #[test]
    fn an_id_kept_again_gives_its_latest_end_from_one_place() {
        let mut ended = ended(2);
        ended.keep(ExecutionId::new("e-0"), completed("again"));
        assert_eq!((ended.done.len(), ended.order.len()), (2, 2));
        assert_eq!(saga_of(&ended, "e-0").as_deref(), Some("again"));
    }

    #[test]
    fn an_end_older_than_its_time_is_not_given_and_goes_at_the_next_keep() {
        let mut ended = ended(2);
        let old = Instant::now()
            .checked_sub(KEEP_FOR)
            .expect("a clock past KEEP_FOR");
        ended.done.get_mut(&ExecutionId::new("e-0")).unwrap().at = old;
        assert_eq!(saga_of(&ended, "e-0"), None);
        assert_eq!(saga_of(&ended, "e-1").as_deref(), Some("run 1"));
        ended.keep(ExecutionId::new("e-2"), completed("run 2"));
        assert_eq!((ended.done.len(), ended.order.len()), (2, 2));
        assert!(!ended.done.contains_key(&ExecutionId::new("e-0")));
    }

    #[test]
    fn a_forgotten_end_is_not_given_and_its_place_goes() {
        let mut ended = ended(3);
        ended.forget(&ExecutionId::new("e-1"));
        assert_eq!(saga_of(&ended, "e-1"), None);
        assert_eq!((ended.done.len(), ended.order.len()), (2, 2));
        ended.clear();
        assert_eq!((ended.done.len(), ended.order.len()), (0, 0));
    }

    #[test]
    fn only_a_report_is_given() {
        let mut ended = Ended::default();
        ended.keep(ExecutionId::new("e"), watch::channel(None).1);
        assert_eq!(saga_of(&ended, "e"), None);
    }
}

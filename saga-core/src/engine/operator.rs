//! Operator commands on executions: request a resume, resume, abandon,
//! cancel, purge, and the reads tools use (report, list, get).

use super::{EngineError, ExecutionView, SagaEngine};
use crate::id::ExecutionId;
use crate::report::{ExecutionStatus, SagaReport};
use crate::store::{Event, EventKind, ExecutionRecord, now_ms};

impl SagaEngine {
    /// Asks for a stuck execution to be resumed by whichever worker holds
    /// its definition: records the request in its log, for a
    /// [`Worker`](crate::Worker) with the definition to carry out at its
    /// next poll, or the next [`recover`](Self::recover) of such an
    /// engine (as [`resume`](Self::resume) would). For tools that do not hold the
    /// saga's code, such as the `saga` CLI; an engine with the definition
    /// registered can call `resume` directly.
    ///
    /// # Errors
    /// [`EngineError::NotFound`], [`EngineError::WrongStatus`] if it is not
    /// stuck, [`EngineError::Busy`] if an owner holds it, store errors.
    pub async fn request_resume(&self, id: &ExecutionId) -> Result<(), EngineError> {
        self.operator_event(
            id,
            EventKind::ResumeRequested,
            ExecutionStatus::Stuck,
            resumable,
        )
        .await
    }

    /// Writes an operator's event under the execution's lease, leaving it
    /// `status`, if `applies` holds of it before the claim and again once
    /// the lease is held (its owner may have moved it on meanwhile).
    pub(super) async fn operator_event(
        &self,
        id: &ExecutionId,
        kind: EventKind,
        status: ExecutionStatus,
        applies: impl Fn(&ExecutionRecord) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        // Checked before entering, so a command on an id that does not
        // exist yet never holds off a `start_with_id` creating it; checked
        // again under the lease.
        applies(&self.record(id).await?)?;
        // Held until the lease is given up again.
        let Some(mut claiming) = self.enter(id) else {
            return Err(self.busy_here(id));
        };
        // A lease the store fails to take back is kept for the next
        // command, which answers the store's error meanwhile.
        claiming.give_back_stale().await?;
        let store = &self.inner.store;
        let Some(lease) = store.claim(id, &self.inner.owner, self.lease_ttl).await? else {
            return Err(self.busy(id).await);
        };
        let appended = match self.record(id).await {
            Ok(record) => match applies(&record) {
                Ok(()) => {
                    let event = Event::new(record.last_seq + 1, kind);
                    store
                        .append(id, &lease, vec![event], status)
                        .await
                        .map(|_| ())
                        .map_err(EngineError::from)
                }
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        store.release(id, &lease).await?;
        appended
    }

    /// An execution's report, rebuilt from its log and its definition's
    /// shape (the registered definition's, or else the stored one),
    /// whatever its status (statuses, outcomes, attempts and
    /// errors; durations from the log's timestamps, to the millisecond,
    /// including any time spent waiting for recovery). Needs no registered
    /// definition: for tools.
    ///
    /// # Errors
    /// [`EngineError::NotFound`], store errors (a definition neither
    /// registered here nor stored is a [`StoreError::BadRecord`](crate::store::StoreError::BadRecord)).
    pub async fn report(&self, id: &ExecutionId) -> Result<SagaReport, EngineError> {
        let record = self.record(id).await?;
        self.rebuilt_report(&record).await
    }

    /// Executions with `status` (all for `None`), oldest first.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> Result<Vec<ExecutionRecord>, EngineError> {
        Ok(self.inner.store.list(status).await?)
    }

    /// An execution and its log.
    ///
    /// # Errors
    /// Store errors.
    pub async fn get(&self, id: &ExecutionId) -> Result<Option<ExecutionView>, EngineError> {
        let Some(record) = self.inner.store.get(id).await? else {
            return Ok(None);
        };
        let events = self.inner.store.events(id).await?;
        Ok(Some(ExecutionView { record, events }))
    }

    /// Runs a stuck execution again, once an operator fixed the cause: the
    /// step (or compensation) that failed for good gets a fresh retry
    /// budget, and the run goes on in the direction it was going.
    ///
    /// # Errors
    /// [`EngineError::WrongStatus`] if it is not stuck, [`EngineError::Busy`]
    /// if another owner holds it, and the errors of
    /// [`recover`](Self::recover).
    pub async fn resume(&self, id: &ExecutionId) -> Result<(), EngineError> {
        let record = self.record(id).await?;
        resumable(&record)?;
        let Some(claiming) = self.enter(id) else {
            return Err(self.busy_here(id));
        };
        // In a task of its own: a caller that gives up mid-claim does not
        // cut it between taking the lease and launching the run.
        let engine = self.clone();
        let taken = super::detached(async move {
            engine
                .take_over(&record, Some(EventKind::Resumed), false, claiming)
                .await
        })
        .await?;
        match taken {
            Some(_) => Ok(()),
            None => Err(self.busy(id).await),
        }
    }

    /// Gives an execution up for good: it is marked abandoned and never
    /// run again; nothing is compensated. For a stuck execution that an
    /// operator settled by hand, or one whose definition is gone.
    ///
    /// # Errors
    /// [`EngineError::WrongStatus`] if it ended otherwise,
    /// [`EngineError::Busy`] if an owner is running it.
    pub async fn abandon(&self, id: &ExecutionId) -> Result<(), EngineError> {
        self.operator_event(id, EventKind::Abandoned, ExecutionStatus::Abandoned, |r| {
            if r.status.is_finished() && r.status != ExecutionStatus::Stuck {
                return Err(EngineError::WrongStatus {
                    execution_id: r.id.clone(),
                    status: r.status,
                    operation: "abandon",
                    applies: "stuck or unfinished executions",
                });
            }
            Ok(())
        })
        .await
    }

    /// Asks an execution to cancel. Its owner (this process or another)
    /// sees the request at its next log write: before the pivot the run
    /// rolls back and ends cancelled (between the pivot's retries too,
    /// while every attempt of it failed without effect); once the pivot
    /// may have taken effect or did, or during the last step
    /// (nothing is left to stop), the request is recorded and ignored
    /// ([`SagaReport::cancel_ignored`](crate::SagaReport::cancel_ignored)).
    /// An execution that completes between the check of its status and
    /// the request keeps the request, and its report says it was ignored.
    ///
    /// # Errors
    /// [`EngineError::NotFound`]; [`EngineError::WrongStatus`] if it has
    /// ended (completed, compensated, cancelled, stuck or abandoned):
    /// nothing is recorded; store errors.
    pub async fn cancel(&self, id: &ExecutionId) -> Result<(), EngineError> {
        let record = self.record(id).await?;
        if record.status.is_finished() {
            return Err(EngineError::WrongStatus {
                execution_id: record.id,
                status: record.status,
                operation: "cancel",
                applies: "running or compensating executions",
            });
        }
        if !self.inner.store.request_cancel(id).await? {
            return Err(EngineError::NotFound {
                execution_id: id.clone(),
            });
        }
        if let Some(run) = self.live().get(id).and_then(|l| l.run.as_ref()) {
            run.cancel.cancel();
        }
        Ok(())
    }

    /// Deletes executions that finished (completed, compensated, cancelled
    /// or abandoned; never stuck ones) longer ago than the retention;
    /// returns how many.
    ///
    /// The SQLite and PostgreSQL stores delete in batches of a few hundred
    /// executions, each its own transaction
    /// ([`SagaStore::purge`](crate::store::SagaStore::purge)): the runs in
    /// flight keep writing while a large purge (the first of a year-old
    /// store) goes on.
    ///
    /// # Errors
    /// Store errors. A purge that fails part-way has deleted the batches
    /// committed before the error; the next purge deletes the rest.
    pub async fn purge(&self) -> Result<u64, EngineError> {
        let retention = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let before = now_ms().saturating_sub(retention);
        let purged = self.inner.store.purge(before).await;
        // Their ids may be started again; a purge that failed part-way
        // may have deleted some.
        if !matches!(purged, Ok(0)) {
            self.ended().clear();
        }
        Ok(purged?)
    }
}

/// `resume` applies to stuck executions only.
pub(super) fn resumable(record: &ExecutionRecord) -> Result<(), EngineError> {
    if record.status == ExecutionStatus::Stuck {
        Ok(())
    } else {
        Err(EngineError::WrongStatus {
            execution_id: record.id.clone(),
            status: record.status,
            operation: "resume",
            applies: "stuck executions",
        })
    }
}

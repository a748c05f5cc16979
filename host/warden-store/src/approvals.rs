//! The runs waiting for one approver, filtered in SQL: a list cut at its limit before it is
//! filtered by who may approve what can come back empty while runs wait for that approver.

use super::{Cursor, Pool, RawRun, RunRecord, Store, StoreError, cursor_binds, db, now};
use sqlx::Row;

impl Store {
    /// Runs waiting for a decision that `approver_oid` may give: pending, approval not
    /// expired, of one of `tasks` (the tasks the policy lets them approve), not requested by
    /// them (nobody decides their own run) and not by an empty object id (nobody's: it could
    /// be anyone's, as `Policy::may_approve_run` refuses it); none for an empty
    /// `approver_oid`; oldest first, up to `limit` after `after` (the
    /// [`RunRecord::cursor`] of the last run of the previous page).
    pub async fn pending_approvals_for(
        &self,
        approver_oid: &str,
        tasks: &[&str],
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        if tasks.is_empty() || approver_oid.is_empty() {
            return Ok(Vec::new());
        }
        // The task ids as one JSON array: one statement text whatever their number.
        let tasks = serde_json::to_string(tasks).unwrap_or_else(|_| "[]".to_owned());
        let (after_at, after_id) = cursor_binds(after);
        let at = now();
        macro_rules! pending_for {
            ($tasks_in:literal) => {
                concat!(
                    "SELECT ",
                    run_columns!(),
                    " FROM warden_runs WHERE status = 'pending-approval' \
                     AND (approval_expires_at IS NULL OR approval_expires_at > $1) \
                     AND requested_by_oid <> $2 AND requested_by_oid <> '' AND task IN ",
                    $tasks_in,
                    " AND ($4 IS NULL OR created_at > $4 OR (created_at = $4 AND id > $5)) \
                     ORDER BY created_at, id LIMIT $6"
                )
            };
        }
        let sql = match self.pool {
            Pool::Sqlite(_) => pending_for!("(SELECT value FROM json_each($3))"),
            Pool::Postgres(_) => pending_for!("(SELECT jsonb_array_elements_text($3::jsonb))"),
        };
        with_pool!(self, |pool| {
            let rows = sqlx::query(sql)
                .bind(at)
                .bind(approver_oid)
                .bind(&tasks)
                .bind(after_at)
                .bind(after_id.clone())
                .bind(super::limit(limit))
                .fetch_all(pool)
                .await
                .map_err(db("listing pending approvals"))?;
            rows.into_iter().map(|row| raw_run!(row)).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Postgres;
    use crate::{NewRun, PersonRef, Store};
    use serde_json::json;

    fn person(oid: &str) -> PersonRef {
        PersonRef {
            oid: oid.into(),
            upn: format!("{oid}@example.com"),
        }
    }

    async fn only_the_approvers_tasks_past_the_limit(store: Store) {
        let new = |task: &str, by: &str| NewRun {
            task: task.into(),
            parameters: json!({}),
            requested_by: person(by),
            needs_approval: true,
            approval_expires_at: None,
        };
        for _ in 0..5 {
            store.create_run(new("not-theirs", "asker")).await.unwrap();
        }
        store.create_run(new("theirs", "approver")).await.unwrap();
        let waiting = store.create_run(new("theirs", "asker")).await.unwrap();
        let other = store.create_run(new("also", "asker")).await.unwrap();
        let found = store
            .pending_approvals_for("approver", &["theirs"], None, 3)
            .await
            .unwrap();
        let ids: Vec<_> = found.iter().map(|r| r.id).collect();
        assert_eq!(ids, [waiting.id], "not their own, not another task's");
        let found = store
            .pending_approvals_for("approver", &["theirs", "also"], None, 1)
            .await
            .unwrap();
        assert_eq!(found[0].id, waiting.id);
        let next = store
            .pending_approvals_for("approver", &["theirs", "also"], Some(found[0].cursor()), 1)
            .await
            .unwrap();
        assert_eq!(next[0].id, other.id, "paged");
        assert!(
            store
                .pending_approvals_for("approver", &[], None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn pending_approvals_for_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("s.db").display());
        only_the_approvers_tasks_past_the_limit(Store::open(&url).await.unwrap()).await;
    }

    #[tokio::test]
    async fn pending_approvals_for_on_postgres() {
        let Some(server) = Postgres::shared() else {
            return;
        };
        let url = server.create_database().await;
        only_the_approvers_tasks_past_the_limit(Store::open(&url).await.unwrap()).await;
    }
}

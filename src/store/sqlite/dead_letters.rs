//! Dead letters for the command line (`dead-letters list | retry | purge`) and the export
//! that `store import` copies into PostgreSQL.
//!
//! The CLI opens its own connection to the same file as a running server (WAL mode and a busy
//! timeout make that safe). A retried row goes back to `pending`; the server's dispatcher polls
//! the store at least every second, so it picks the row up within a few seconds.

use std::path::Path;

use rusqlite::{params, Connection};

use super::{connect, now_ms, StoreError};
use crate::configuration::SyncMode;
use crate::store::{DeadLetter, ExportedDelivery, ExportedEvent};

pub(super) struct DeadLetters {
    conn: Connection,
}

impl DeadLetters {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            conn: connect(path, SyncMode::Full, std::time::Duration::from_secs(10))?,
        })
    }

    pub fn list(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.id, e.public_id, e.hook, d.target, e.short_id, d.attempts, d.last_status,
                    d.last_error, d.response, d.body, d.updated_at
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.state = 'dead' ORDER BY d.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DeadLetter {
                id: r.get(0)?,
                event_id: r.get(1)?,
                hook: r.get(2)?,
                target: r.get(3)?,
                short_id: r.get(4)?,
                attempts: r.get(5)?,
                last_status: r.get(6)?,
                last_error: r.get(7)?,
                response: r.get(8)?,
                body: r.get(9)?,
                updated_at_ms: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Re-queue the given dead letters (or all with `None`). Attempts and age start afresh, and
    /// the stored body is dropped so the message is rendered again with the current templates:
    /// a dead letter is often a template mistake the operator has just fixed.
    pub fn retry(&self, ids: Option<&[i64]>) -> Result<usize, StoreError> {
        let now = now_ms();
        let sql = "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = ?1,
                   age_from = ?1, updated_at = ?1, body = NULL WHERE state = 'dead'";
        Ok(match ids {
            None => self.conn.execute(sql, params![now])?,
            Some(ids) => {
                let mut stmt = self.conn.prepare(&format!("{sql} AND id = ?2"))?;
                let mut n = 0;
                for id in ids {
                    n += stmt.execute(params![now, id])?;
                }
                n
            }
        })
    }

    /// Delete every dead letter.
    pub fn purge(&self) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM deliveries WHERE state = 'dead'", [])?)
    }
}

/// The events that still matter in the SQLite store at `path`, for `store import`: those with a
/// pending delivery or a dead letter, with exactly those deliveries. Finished rows stay behind.
pub(crate) fn export(path: &Path) -> Result<Vec<ExportedEvent>, StoreError> {
    if !path.exists() {
        // connect() would create an empty store: say what is wrong instead.
        return Err(StoreError::Open {
            path: path.to_path_buf(),
            source: rusqlite::Error::InvalidPath(path.to_path_buf()),
        });
    }
    let conn = connect(path, SyncMode::Full, std::time::Duration::from_secs(10))?;
    let mut stmt = conn.prepare(
        "SELECT e.id, e.public_id, e.hook, e.dedup_key, e.type, e.action, e.alert_uuid, e.short_id,
                e.body, e.received_at, d.target, d.state, d.attempts, d.next_at, d.age_from,
                d.updated_at, d.last_status, d.last_error, d.response, d.body
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.state IN ('pending', 'dead') ORDER BY e.id, d.id",
    )?;
    let mut out: Vec<ExportedEvent> = Vec::new();
    let mut last_row = None;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let row: i64 = r.get(0)?;
        if last_row != Some(row) {
            last_row = Some(row);
            out.push(ExportedEvent {
                public_id: r.get(1)?,
                hook: r.get(2)?,
                dedup_key: r.get(3)?,
                kind: r.get(4)?,
                action: r.get(5)?,
                alert_uuid: r.get(6)?,
                short_id: r.get(7)?,
                body: r.get(8)?,
                received_at: r.get(9)?,
                deliveries: Vec::new(),
            });
        }
        let delivery = ExportedDelivery {
            target: r.get(10)?,
            state: r.get(11)?,
            attempts: r.get(12)?,
            next_at: r.get(13)?,
            age_from: r.get(14)?,
            updated_at: r.get(15)?,
            last_status: r.get(16)?,
            last_error: r.get(17)?,
            response: r.get(18)?,
            body: r.get(19)?,
        };
        if let Some(ev) = out.last_mut() {
            ev.deliveries.push(delivery);
        }
    }
    Ok(out)
}

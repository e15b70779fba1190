//! Dead letters for the command line: `dead-letters list | retry | purge`.
//!
//! The CLI opens its own connection to the same file as a running server (WAL mode and a busy
//! timeout make that safe). A retried row goes back to `pending`; the server's dispatcher polls
//! the store at least every second, so it picks the row up within a few seconds.

use std::path::Path;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::{connect, now_ms, StoreError};
use crate::configuration::SyncMode;

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub event_id: String,
    pub hook: String,
    pub target: String,
    pub short_id: Option<String>,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub response: Option<String>,
    pub body: Option<String>,
    pub updated_at_ms: i64,
}

pub struct DeadLetters {
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

//! Message references of the bot-token chat targets, on a connection of their own (like the
//! dead letters) so the writer thread and its command set stay as they are. One read or write
//! per chat delivery: rare next to ingests.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::{connect, StoreError};
use crate::configuration::SyncMode;
use crate::store::MessageRef;

pub(super) struct MessageRefs {
    conn: Connection,
}

impl MessageRefs {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            conn: connect(path, SyncMode::Full, std::time::Duration::from_secs(10))?,
        })
    }

    pub fn get(&self, target: &str, alert_uuid: &str) -> Result<Option<MessageRef>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT channel, message_id, created_at FROM message_refs
                 WHERE target = ?1 AND alert_uuid = ?2",
                params![target, alert_uuid],
                |r| {
                    Ok(MessageRef {
                        channel: r.get(0)?,
                        message_id: r.get(1)?,
                        created_at_ms: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn put(&self, target: &str, alert_uuid: &str, r: &MessageRef) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO message_refs (target, alert_uuid, channel, message_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (target, alert_uuid) DO UPDATE
               SET channel = excluded.channel, message_id = excluded.message_id,
                   created_at = excluded.created_at",
            params![target, alert_uuid, r.channel, r.message_id, r.created_at_ms],
        )?;
        Ok(())
    }

    pub fn prune(&self, older_than_ms: i64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM message_refs WHERE created_at < ?1",
            params![older_than_ms],
        )?)
    }
}

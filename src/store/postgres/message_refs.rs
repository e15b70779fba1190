//! Message references of the bot-token chat targets (see `store::MessageRef`).

use super::PgStore;
use crate::store::{MessageRef, StoreError};

impl PgStore {
    pub async fn message_ref(
        &self,
        target: &str,
        alert_uuid: &str,
    ) -> Result<Option<MessageRef>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT channel, message_id, created_at FROM message_refs
                 WHERE target = $1 AND alert_uuid = $2",
                &[&target, &alert_uuid],
            )
            .await?;
        Ok(row.map(|r| MessageRef {
            channel: r.get(0),
            message_id: r.get(1),
            created_at_ms: r.get(2),
        }))
    }

    pub async fn put_message_ref(
        &self,
        target: &str,
        alert_uuid: &str,
        r: &MessageRef,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO message_refs (target, alert_uuid, channel, message_id, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (target, alert_uuid) DO UPDATE
                   SET channel = EXCLUDED.channel, message_id = EXCLUDED.message_id,
                       created_at = EXCLUDED.created_at",
                &[
                    &target,
                    &alert_uuid,
                    &r.channel,
                    &r.message_id,
                    &r.created_at_ms,
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn prune_message_refs(&self, older_than_ms: i64) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM message_refs WHERE created_at < $1",
                &[&older_than_ms],
            )
            .await?;
        Ok(n as usize)
    }
}

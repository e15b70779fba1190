-- Issue 11: the chat message each alert has in each bot-token target (slack_app,
-- mattermost_app), so later events edit it instead of posting another. Expires with
-- retention_days like finished deliveries.
CREATE TABLE message_refs (
    target     TEXT    NOT NULL,
    alert_uuid TEXT    NOT NULL,
    channel    TEXT    NOT NULL,
    message_id TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (target, alert_uuid)
);
CREATE INDEX message_refs_created_at ON message_refs (created_at);

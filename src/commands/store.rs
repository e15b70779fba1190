//! `store import --from FILE`: move a SQLite store's queue into the configured PostgreSQL store.

use crate::cli::StoreCommand;
use crate::configuration::Settings;
use crate::store::{Store, StoreError};

/// Copy the pending deliveries, their events and the dead letters of a SQLite store file into
/// the configured PostgreSQL store; idempotent (a second run copies nothing twice).
pub async fn store_import(settings: &Settings, cmd: &StoreCommand) -> Result<String, StoreError> {
    let StoreCommand::Import { from } = cmd;
    if !settings.store.is_postgres() {
        return Err(StoreError::NotPostgres);
    }
    let store = Store::open_for_cli(settings).await?;
    let report = store.import_sqlite(from).await?;
    Ok(format!(
        "imported {} event(s) with {} delivery(ies) from {} into {}; {} event(s) were already there\n",
        report.events,
        report.deliveries,
        from.display(),
        store.describe(),
        report.already_present
    ))
}

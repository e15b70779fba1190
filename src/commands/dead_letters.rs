//! `dead-letters list | retry | purge` against the configured store file.

use crate::cli::DeadLetterCommand;
use crate::configuration::Settings;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The command was given ids that are not dead letters, or none at all (exit 1).
    #[error("{0}")]
    Usage(String),
}

/// The ids of `wanted` that are not in `known`, in the order given, without repeats.
///
/// Rule: an id that is not a dead letter now is unknown. Reason: `retry 99999` answering
/// "re-queued 0" with exit 0 lets a typo pass for success in a script or a runbook.
pub fn unknown_ids(wanted: &[i64], known: &[i64]) -> Vec<i64> {
    let mut out: Vec<i64> = Vec::new();
    for id in wanted {
        if !known.contains(id) && !out.contains(id) {
            out.push(*id);
        }
    }
    out
}

/// `dead-letters …` against the configured store file. `confirm(count)` decides a purge
/// without `--yes` (main asks on a terminal and goes on elsewhere).
pub fn dead_letters(
    settings: &Settings,
    cmd: &DeadLetterCommand,
    confirm: &mut dyn FnMut(usize) -> bool,
) -> Result<String, DeadLetterError> {
    let store = crate::store::DeadLetters::open(&settings.resolve(&settings.store.path))?;
    Ok(match cmd {
        DeadLetterCommand::List { json } => {
            let list = store.list()?;
            if *json {
                list.iter()
                    .filter_map(|d| serde_json::to_string(d).ok())
                    .map(|l| l + "\n")
                    .collect()
            } else if list.is_empty() {
                "no dead letters\n".to_string()
            } else {
                let mut out =
                    String::from("ID\tDEAD SINCE\tTARGET\tHOOK\tALERT\tATTEMPTS\tSTATUS\tERROR\n");
                for d in list {
                    out.push_str(&format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                        d.id,
                        crate::render::text::format_unix_utc(d.updated_at_ms.div_euclid(1000)),
                        d.target,
                        d.hook,
                        d.short_id.as_deref().unwrap_or("-"),
                        d.attempts,
                        d.last_status.map(|s| s.to_string()).unwrap_or("-".into()),
                        d.last_error.as_deref().unwrap_or("-"),
                    ));
                }
                out
            }
        }
        DeadLetterCommand::Retry { ids, all } => {
            if !*all && ids.is_empty() {
                return Err(DeadLetterError::Usage(
                    "give the ids of the dead letters to re-queue (see `dead-letters list`), or --all to re-queue every one".into(),
                ));
            }
            let unknown = if *all {
                Vec::new()
            } else {
                let known: Vec<i64> = store.list()?.iter().map(|d| d.id).collect();
                unknown_ids(ids, &known)
            };
            if !unknown.is_empty() {
                let list: Vec<String> = unknown.iter().map(ToString::to_string).collect();
                return Err(DeadLetterError::Usage(format!(
                    "no dead letter with id {} (see `dead-letters list`); nothing was re-queued",
                    list.join(", ")
                )));
            }
            let n = store.retry(if *all { None } else { Some(ids) })?;
            format!("re-queued {n} dead letter(s); a running server sends them within seconds\n")
        }
        DeadLetterCommand::Purge { yes } => {
            let count = store.list()?.len();
            if count > 0 && !*yes && !confirm(count) {
                return Ok("nothing purged\n".into());
            }
            format!("purged {} dead letter(s)\n", store.purge()?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ids_are_found_in_order_once() {
        assert_eq!(unknown_ids(&[3, 99, 4, 99, 7], &[3, 4, 5]), vec![99, 7]);
        assert!(unknown_ids(&[3], &[3]).is_empty());
    }
}

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
pub async fn dead_letters(
    settings: &Settings,
    cmd: &DeadLetterCommand,
    confirm: &mut dyn FnMut(usize) -> bool,
) -> Result<String, DeadLetterError> {
    let store = crate::store::Store::open_for_cli(settings).await?;
    Ok(match cmd {
        DeadLetterCommand::List { json } => {
            let list = store.dead_letters().await?;
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
                        why(d.last_error.as_deref(), d.response.as_deref()),
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
                let known: Vec<i64> = store.dead_letters().await?.iter().map(|d| d.id).collect();
                unknown_ids(ids, &known)
            };
            if !unknown.is_empty() {
                let list: Vec<String> = unknown.iter().map(ToString::to_string).collect();
                return Err(DeadLetterError::Usage(format!(
                    "no dead letter with id {} (see `dead-letters list`); nothing was re-queued",
                    list.join(", ")
                )));
            }
            let n = store
                .retry_dead(if *all { None } else { Some(ids.clone()) })
                .await?;
            format!("re-queued {n} dead letter(s); a running server sends them within seconds\n")
        }
        DeadLetterCommand::Purge { yes } => {
            let count = store.dead_letters().await?.len();
            if count > 0 && !*yes && !confirm(count) {
                return Ok("nothing purged\n".into());
            }
            format!("purged {} dead letter(s)\n", store.purge_dead().await?)
        }
    })
}

/// Longest answer excerpt in the table's ERROR column.
const WHY_CHARS: usize = 60;

/// The ERROR column: the relay's reason, then a one-line excerpt of the target's answer.
///
/// Rule: `HTTP 400: invalid_payload`: the answer's JSON error text (see [`answer_text`]) or its
/// raw text, control characters and runs of blanks turned into
/// one space, cut to [`WHY_CHARS`] characters; left out when empty or already in the reason.
/// Reason: "why" is the operator's first question, and a table row must stay one line that a
/// hostile answer cannot break (newlines, escape sequences).
pub fn why(error: Option<&str>, response: Option<&str>) -> String {
    let error = one_line(error.unwrap_or("-"), usize::MAX);
    let Some(raw) = response.map(str::trim).filter(|r| !r.is_empty()) else {
        return error;
    };
    let text = match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v) => answer_text(&v).unwrap_or_else(|| raw.to_string()),
        Err(_) => raw.to_string(),
    };
    let excerpt = one_line(&text, WHY_CHARS);
    if excerpt.is_empty() || error.contains(&excerpt) {
        error
    } else {
        format!("{error}: {excerpt}")
    }
}

/// The human part of a JSON error answer: `error`, `message`, `text`, `detail` or `code`, at
/// the top or nested (Teams: `{"error": {"code": …, "message": …}}`).
fn answer_text(v: &serde_json::Value) -> Option<String> {
    for key in ["error", "message", "text", "detail", "code"] {
        match v.get(key) {
            Some(serde_json::Value::String(s)) => return Some(s.clone()),
            Some(inner @ serde_json::Value::Object(_)) => {
                if let Some(s) = answer_text(inner) {
                    return Some(s);
                }
            }
            _ => {}
        }
    }
    None
}

/// `s` on one line: control characters and blank runs become one space, cut to `max` chars.
fn one_line(s: &str, max: usize) -> String {
    let mut out = String::new();
    for word in s.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > max {
        let cut: String = out.chars().take(max.saturating_sub(1)).collect();
        return format!("{}…", cut.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_column_says_why_on_one_line() {
        assert_eq!(
            why(Some("HTTP 400"), Some("invalid_payload")),
            "HTTP 400: invalid_payload"
        );
        assert_eq!(
            why(
                Some("HTTP 404"),
                Some("{\"ok\":false,\"error\":\"channel_not_found\"}")
            ),
            "HTTP 404: channel_not_found"
        );
        assert_eq!(
            why(
                Some("HTTP 400"),
                Some("{\"error\":{\"code\":\"BadRequest\",\"message\":\"Invalid card\"}}")
            ),
            "HTTP 400: Invalid card"
        );
        // Control characters and newlines never reach the table; long answers are cut.
        let hostile = format!("bad\n\x1b[31mred\r\t{}", "x".repeat(200));
        let got = why(Some("HTTP 400"), Some(&hostile));
        assert!(!got.chars().any(|c| c.is_control()), "{got:?}");
        assert!(
            got.chars().count() <= "HTTP 400: ".len() + WHY_CHARS,
            "{got}"
        );
        assert!(got.starts_with("HTTP 400: bad [31mred x"), "{got}");
        assert!(got.ends_with('…'));
        // Nothing to add.
        assert_eq!(why(Some("HTTP 500"), Some("  ")), "HTTP 500");
        assert_eq!(why(Some("timeout"), None), "timeout");
        assert_eq!(why(None, None), "-");
        let redirect = "target redirected to https://x.test (HTTP 302): update the URL";
        assert_eq!(why(Some(redirect), Some("")), redirect);
    }

    #[test]
    fn unknown_ids_are_found_in_order_once() {
        assert_eq!(unknown_ids(&[3, 99, 4, 99, 7], &[3, 4, 5]), vec![99, 7]);
        assert!(unknown_ids(&[3], &[3]).is_empty());
    }
}

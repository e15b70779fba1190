//! The command line (README, "Command line"): clap types only.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sekoia-relay",
    version,
    about = "Relay SEKOIA.IO webhook notifications to Teams, Slack, Mattermost, Chime and JSON webhooks",
    after_help = "Examples:\n  sekoia-relay                          run the server with ./config.toml\n  sekoia-relay check                    validate config, templates and routing\n  sekoia-relay render --hook soc        show what each target would receive\n  sekoia-relay --config /etc/sekoia-relay/config.toml serve\n  sekoia-relay dead-letters list"
)]
pub struct Cli {
    /// Config file [default: ./config.toml, or $SEKOIA_RELAY_CONFIG]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no command is given)
    #[command(
        after_help = "Examples:\n  sekoia-relay serve --pid-file data/relay.pid\n  kill -HUP \"$(cat data/relay.pid)\"      reload this relay, and only this one"
    )]
    Serve {
        /// Write the process id to FILE while serving (removed at exit), for `kill -HUP "$(cat FILE)"`
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
    },
    /// Check config, templates and routing: exit 0 when all is well, 1 with every problem listed
    ///
    /// Loads the config, compiles every template and `when` expression, renders every target's
    /// template against built-in samples (three alerts with a created and an updated event, a
    /// report without alert, an alert whose enrichment failed) and validates each body for its
    /// kind: JSON, Adaptive Card schema (Teams), Block Kit (Slack), size limits (Chime 4096
    /// bytes, ...). Problems name the file and line. No network, no store.
    ///
    /// With --online, also calls the Alert API once per distinct API URL and key (a cheap
    /// authenticated read) and reports whether each key works: ok, 401 (invalid, expired or
    /// another region), 403 (missing SIC_READ_ALERTS), wrong api_url, unreachable.
    #[command(
        after_help = "Examples:\n  sekoia-relay check\n  SEKOIA_API_KEY=... sekoia-relay check --online\n  sekoia-relay --config /etc/sekoia-relay/config.toml check && systemctl reload sekoia-relay"
    )]
    Check {
        /// Also verify each API key against the Alert API (the only network use of `check`)
        #[arg(long)]
        online: bool,
    },
    /// Print the exact request body each target of a hook would receive for an event (offline)
    ///
    /// Applies the hook's routing rules, then renders each reached target's template. Bodies go
    /// to stdout, one per line; which target each is for, and targets not reached, go to stderr.
    /// Nothing is fetched or sent: the alert comes from --alert or a built-in sample.
    #[command(
        after_help = "Examples:\n  sekoia-relay render --hook soc\n  sekoia-relay render --hook soc --event event.json --alert alert.json | jq .\n  sekoia-relay render --hook soc --unenriched      as if the Alert API were down"
    )]
    Render {
        /// Name of the hook (`name` in [[hooks]])
        #[arg(long, value_name = "NAME")]
        hook: String,
        /// A SEKOIA.IO webhook event (JSON) [default: a sample "alert created" event]
        #[arg(long, value_name = "FILE")]
        event: Option<PathBuf>,
        /// An Alert API object (JSON) [default: a sample alert]
        #[arg(long, value_name = "FILE", conflicts_with = "unenriched")]
        alert: Option<PathBuf>,
        /// Render as if the alert could not be fetched
        #[arg(long)]
        unenriched: bool,
    },
    /// Post a sample message (marked as a test) to one target now and show the response
    ///
    /// Prints the HTTP status and the start of the response body; exit 1 if the target did not
    /// accept it. Only the target's scheme and host are shown, never its URL.
    #[command(after_help = "Example:\n  sekoia-relay send-test teams_soc")]
    SendTest {
        /// Name of the target (`[targets.NAME]`)
        target: String,
    },
    /// Print a fresh random hook id and a [[hooks]] snippet to paste into config.toml
    #[command(after_help = "Example:\n  sekoia-relay new-hook soc-paris >> config.toml")]
    NewHook {
        /// Name of the new hook
        #[arg(default_value = "my-hook")]
        name: String,
    },
    /// Print each hook's full URL (public_url + /hooks/{id}); the only command that prints hook ids
    #[command(after_help = "Example:\n  sekoia-relay urls")]
    Urls,
    /// Inspect and re-queue deliveries that failed for good
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// GET /healthz on the configured listen address; exit 0 when healthy, 1 otherwise (for Docker)
    Healthcheck,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters with their last status and error
    #[command(after_help = "Example:\n  sekoia-relay dead-letters list")]
    List {
        /// Print JSON lines (with the rendered body and response excerpt)
        #[arg(long)]
        json: bool,
    },
    /// Re-queue dead letters; a running server sends them within seconds
    #[command(
        after_help = "Examples:\n  sekoia-relay dead-letters retry 12 13\n  sekoia-relay dead-letters retry --all"
    )]
    Retry {
        /// Ids from `dead-letters list` (or --all)
        #[arg(conflicts_with = "all")]
        ids: Vec<i64>,
        /// Re-queue every dead letter
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter (asks first on a terminal)
    #[command(
        after_help = "Examples:\n  sekoia-relay dead-letters purge\n  sekoia-relay dead-letters purge --yes      no question (scripts)"
    )]
    Purge {
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The command was given ids that are not dead letters, or none at all (exit 1).
    #[error("{0}")]
    Usage(String),
}

/// An error and its causes on one line, `outer: cause: root`, each cause said once.
///
/// Rule: a cause whose text is already part of what was printed is skipped. Reason: many
/// errors put their source in their own message *and* expose it as `source()`, so printing
/// the chain naively says `… No such file or directory (os error 2): No such file or
/// directory (os error 2)`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// `new-hook`: a UUID v4 (122 random bits) is unguessable, and the snippet is ready to paste.
pub fn new_hook(name: &str) -> String {
    let id = uuid::Uuid::new_v4();
    format!(
        "[[hooks]]\nname = \"{name}\"\nid = \"{id}\"\ntargets = [\"console\"]   # the targets to notify\n"
    )
}

/// `urls`: one line per hook, `name<TAB>url`.
pub fn urls(settings: &crate::configuration::Settings) -> String {
    let base = if settings.server.public_url.is_empty() {
        format!("http://{}", settings.server.listen)
    } else {
        settings.server.public_url.trim_end_matches('/').to_string()
    };
    let mut out = String::new();
    if settings.server.public_url.is_empty() {
        out.push_str("# server.public_url is not set: showing the local listen address\n");
    }
    for h in &settings.hooks {
        out.push_str(&format!("{}\t{}/hooks/{}\n", h.name, base, h.id));
    }
    out
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
    settings: &crate::configuration::Settings,
    cmd: &DeadLetterCommand,
    confirm: &mut dyn FnMut(usize) -> bool,
) -> Result<String, CliError> {
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
                return Err(CliError::Usage(
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
                return Err(CliError::Usage(format!(
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

/// `healthcheck`: GET /healthz on the listen address (0.0.0.0 is reached via 127.0.0.1).
pub async fn healthcheck(settings: &crate::configuration::Settings) -> bool {
    let addr = settings
        .server
        .listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(_) => return false,
    };
    matches!(
        client.get(format!("http://{addr}/healthz")).send().await,
        Ok(r) if r.status().is_success()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_commands() {
        Cli::command().debug_assert();
        let c = Cli::parse_from([
            "sekoia-relay",
            "--config",
            "x.toml",
            "dead-letters",
            "retry",
            "--all",
        ]);
        assert!(matches!(
            c.command,
            Some(Command::DeadLetters(DeadLetterCommand::Retry {
                all: true,
                ..
            }))
        ));
        let c = Cli::parse_from(["sekoia-relay"]);
        assert!(c.command.is_none());
        assert!(
            Cli::try_parse_from(["sekoia-relay", "dead-letters", "retry", "1", "--all"]).is_err()
        );
    }

    #[test]
    fn unknown_ids_are_found_in_order_once() {
        assert_eq!(unknown_ids(&[3, 99, 4, 99, 7], &[3, 4, 5]), vec![99, 7]);
        assert!(unknown_ids(&[3], &[3]).is_empty());
    }

    #[test]
    fn error_chains_say_each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        // The source in the message and as source(): said once.
        let bind = crate::startup::StartupError::Bind {
            addr: "127.0.0.1:8000".into(),
            source: io(),
        };
        assert_eq!(
            error_chain(&bind),
            "cannot listen on 127.0.0.1:8000: No such file or directory"
        );
        // The source only as source(): still said.
        let read = crate::configuration::ConfigError::Read {
            path: "c.toml".into(),
            source: io(),
        };
        assert_eq!(
            error_chain(&read),
            "cannot read config file c.toml: No such file or directory"
        );
        let wrapped = anyhow::Error::new(read).context("cannot load c.toml");
        assert_eq!(
            error_chain(wrapped.as_ref()),
            "cannot load c.toml: cannot read config file c.toml: No such file or directory"
        );
    }

    #[test]
    fn new_hook_snippet_has_a_uuid() {
        let s = new_hook("soc");
        let id = s.split('"').nth(3).unwrap();
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    }

    use clap::CommandFactory;
}

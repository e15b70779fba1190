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
        /// Render a sample storm digest (four sample alerts) for each target of the hook
        #[arg(long, conflicts_with_all = ["event", "alert", "unenriched"])]
        digest: bool,
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
    /// Store maintenance (moving a SQLite queue into PostgreSQL)
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the pending deliveries, their events and the dead letters of a SQLite store file
    /// into the configured PostgreSQL store ([store] url); running it twice copies nothing twice
    #[command(after_help = "Example:\n  sekoia-relay store import --from data/relay.db")]
    Import {
        /// The SQLite store file (stop the server that uses it first)
        #[arg(long)]
        from: std::path::PathBuf,
    },
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

    use clap::CommandFactory;
}

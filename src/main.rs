//! Entry point: parse the command line, load the config, run the command.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sekoia_relay::cli::{Cli, Command};
use sekoia_relay::{commands, configuration, startup::Application, telemetry};

// jemalloc instead of glibc malloc: under load the profile showed ~14% of the relay's CPU in
// glibc's allocator, and glibc's per-thread arenas inflate RSS. mimalloc was tried too: faster
// than glibc but twice the idle RSS (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", commands::error_chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<ExitCode> {
    let args = Cli::parse();
    let command = args.command.unwrap_or(Command::Serve { pid_file: None });
    if let Command::NewHook { name } = &command {
        print!("{}", commands::hooks::new_hook(name));
        return Ok(ExitCode::SUCCESS);
    }
    let path = configuration::config_path(args.config);
    if let Command::Check { online } = &command {
        let mut report = commands::check::run(&path);
        if *online {
            // Only a config that loads has keys to verify; a broken one is already reported.
            if let Ok(settings) = configuration::load(&path) {
                let checks = commands::verify::run(&settings).await;
                commands::verify::add_to_report(&mut report, &checks);
            }
        }
        print!("{}", report.to_text());
        return Ok(exit(report.ok()));
    }
    // Commands that send nothing must work without the targets' secrets in the environment.
    let secrets = match &command {
        Command::Serve { .. } => configuration::Secrets::Resolve,
        Command::SendTest { target } => configuration::Secrets::SkipAllBut(target.clone()),
        _ => configuration::Secrets::Skip,
    };
    let settings = configuration::load_with_secrets(&path, secrets)
        .with_context(|| format!("cannot load {}", path.display()))?;
    match command {
        Command::Serve { pid_file } => {
            telemetry::init(settings.server.log_format);
            // Listen for SIGHUP before anything else: its default action kills the process,
            // and a reload sent during startup must not do that.
            #[cfg(unix)]
            let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot listen for SIGHUP")?;
            let shutdown = shutdown_signal().context("cannot listen for SIGTERM/SIGINT")?;
            let for_key_check = settings.clone();
            let app = Application::build(settings).await.context("cannot start")?;
            // In the background: a slow or unreachable API must not delay serving.
            tokio::spawn(commands::verify::log_at_startup(for_key_check));
            #[cfg(unix)]
            tokio::spawn(reload_on_sighup(hangup, app.reload_handle(), path));
            // Written once serving (the store lock is held): a second relay on the same
            // store fails before it could overwrite the file.
            if let Some(file) = &pid_file {
                std::fs::write(file, format!("{}\n", std::process::id()))
                    .with_context(|| format!("cannot write the pid file {}", file.display()))?;
            }
            let served = app.run_until(shutdown).await;
            if let Some(file) = &pid_file {
                let _ = std::fs::remove_file(file);
            }
            served?;
        }
        Command::Urls => print!("{}", commands::hooks::urls(&settings)),
        Command::DeadLetters(cmd) => {
            match commands::dead_letters::dead_letters(&settings, &cmd, &mut confirm_purge).await {
                Ok(text) => print!("{text}"),
                Err(commands::dead_letters::DeadLetterError::Usage(message)) => {
                    eprintln!("error: {message}");
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::Store(cmd) => print!("{}", commands::store::store_import(&settings, &cmd).await?),
        Command::Healthcheck => {
            if !commands::healthcheck::healthcheck(&settings).await {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Render {
            hook,
            event,
            alert,
            unenriched,
            digest,
        } => {
            let opts = commands::render::RenderOptions {
                hook,
                event,
                alert,
                unenriched,
                digest,
            };
            let results = commands::render::run(&settings, &opts)?;
            let ok =
                commands::render::print(&results, &mut std::io::stdout(), &mut std::io::stderr())?;
            return Ok(exit(ok));
        }
        Command::SendTest { target } => {
            let report = commands::send_test::run(&settings, &target).await?;
            print!("{}", report.to_text());
            return Ok(exit(report.delivered));
        }
        Command::NewHook { .. } | Command::Check { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// On a terminal, ask before deleting `count` dead letters; elsewhere (scripts, cron) go on.
fn confirm_purge(count: usize) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return true;
    }
    eprint!("Delete {count} dead letter(s) for good? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Each SIGHUP reloads the config file the server was started with (see `reload`: a bad file
/// is logged and the running config keeps serving).
#[cfg(unix)]
async fn reload_on_sighup(
    mut hangup: tokio::signal::unix::Signal,
    handle: sekoia_relay::reload::ReloadHandle,
    path: std::path::PathBuf,
) {
    while hangup.recv().await.is_some() {
        tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
        // The outcome is logged by reload() itself.
        let _ = handle.reload(&path);
    }
}

/// A future that resolves on SIGTERM or SIGINT (Ctrl-C).
///
/// The handlers are installed *now*, not when the future is first polled: the server logs
/// "listening" before `run_until` polls it, and a signal in between must drain, not kill.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

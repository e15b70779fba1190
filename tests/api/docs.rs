//! What the README tells a newcomer to type, and the files it points to.

use crate::helpers::repo_file;

/// Every `sekoia-relay …` command line in the README comes after the README says how to get
/// that command (typed literally, it would otherwise answer `command not found`).
#[test]
fn readme_says_how_to_install_the_command_before_using_it() {
    let readme = repo_file("README.md");
    let install = readme
        .find("cargo install --locked --path .")
        .expect("the README says how to install sekoia-relay");
    let first_use = readme
        .lines()
        .scan(0usize, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .find(|(_, l)| l.trim_start().starts_with("sekoia-relay "))
        .map(|(at, _)| at)
        .expect("the README uses sekoia-relay commands");
    assert!(
        install < first_use,
        "the install step (offset {install}) must come before the first command (offset {first_use})"
    );
    assert!(readme.contains("contrib/systemd/sekoia-relay.service"));
}

/// The shipped unit starts `serve` on an explicit config, reloads with SIGHUP, stops with
/// SIGTERM and enough time to drain, keeps the store in its state directory, and is hardened
/// (a user of its own, read-only system, no capabilities).
#[test]
fn the_systemd_unit_serves_reloads_and_keeps_the_store_in_its_state_directory() {
    let unit = repo_file("contrib/systemd/sekoia-relay.service");
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    let exec = value("ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    let args: Vec<&str> = exec[0].split_whitespace().collect();
    assert!(args[0].ends_with("/sekoia-relay"), "{args:?}");
    assert!(args.windows(2).any(|w| w[0] == "--config"), "{args:?}");
    assert_eq!(args.last(), Some(&"serve"));
    assert_eq!(value("ExecReload"), vec!["/bin/kill -HUP $MAINPID"]);
    assert_eq!(value("KillSignal"), vec!["SIGTERM"]);
    let stop: u64 = value("TimeoutStopSec")[0].parse().expect("seconds");
    assert!(stop > 10, "more than the default shutdown_grace_secs");
    let state = value("StateDirectory");
    assert_eq!(state, vec!["sekoia-relay"]);
    assert!(value("Environment")
        .iter()
        .any(|e| e == "SEKOIA_RELAY__STORE__PATH=/var/lib/sekoia-relay/relay.db"));
    assert!(!value("User").is_empty(), "never as root");
    for (key, want) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("UMask", "0077"),
    ] {
        assert_eq!(value(key), vec![want.to_string()], "{key}");
    }

    // Where systemd is installed, let it check the unit too (the binary path is swapped for
    // one that exists, since the relay is not installed on a test machine).
    let systemd = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if !systemd.is_ok_and(|out| out.status.success()) {
        eprintln!("note: systemd-analyze not found: the unit was not verified by systemd");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sekoia-relay.service");
    std::fs::write(&copy, unit.replace(args[0], "/bin/true")).unwrap();
    let analyze = |args: &[&str]| {
        std::process::Command::new("systemd-analyze")
            .args(args)
            .arg(&copy)
            .output()
            .expect("systemd-analyze runs")
    };
    let verify = analyze(&["verify"]);
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !stderr.contains("sekoia-relay.service:"),
        "{stderr}"
    );
    // systemd's own hardening score, 0 (locked down) to 10 (exposed); the unit scores 1.4.
    let security = analyze(&["security", "--offline=yes"]);
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for sekoia-relay.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in\n{report}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{report}");
}

//! Loading and validation, end to end from TOML text and an environment.

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn lookup(env: &Env) -> impl Fn(&str) -> Option<String> + '_ {
    |k| env.get(k).cloned()
}

fn load_text(text: &str) -> Result<Settings, ConfigError> {
    load_with(text, &[])
}

fn load_with(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    load_str(text, Path::new("config.toml"), Path::new("."), &env_of(env))
}

const MINIMAL: &str = r#"
    [targets.out]
    kind = "console"
    [[hooks]]
    name = "soc"
    id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
    targets = ["out"]
"#;

#[test]
fn expands_variables_and_defaults() {
    let env = env_of(&[("A", "x")]);
    let env = lookup(&env);
    assert_eq!(expand_vars("${A}/${B:-d}", "k", &env).unwrap(), "x/d");
    assert_eq!(expand_vars("$$5 $x", "k", &env).unwrap(), "$5 $x");
    assert_eq!(expand_vars("${B:-}", "k", &env).unwrap(), "");
}

#[test]
fn missing_variable_names_variable_and_key() {
    let err = expand_vars("${NOPE}", "targets.t.url", &|_| None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("NOPE") && msg.contains("targets.t.url"),
        "{msg}"
    );
}

#[test]
fn defaults_apply() {
    let s = load_text(MINIMAL).unwrap();
    assert_eq!(s.server.listen, "127.0.0.1:8000");
    assert_eq!(s.delivery.max_attempts, 0);
    assert_eq!(
        s.delivery.retry_schedule,
        crate::delivery::policy::DEFAULT_RETRY_SCHEDULE
    );
    assert_eq!(s.store.sync, SyncMode::Full);
    assert_eq!(s.sekoia.max_requests_per_sec, 5);
}

#[test]
fn unknown_key_is_rejected_by_name() {
    let err = load_text(&format!("{MINIMAL}\n[server]\nlisten_adress = \"x\"\n")).unwrap_err();
    assert!(err.to_string().contains("listen_adress"), "{err}");
    let err =
        load_text(&MINIMAL.replace("targets = [\"out\"]", "targets = [\"out\"]\ntargest = 1"))
            .unwrap_err();
    assert!(err.to_string().contains("targest"), "{err}");
}

#[test]
fn unknown_target_and_retired_teams_url_are_reported() {
    let text = MINIMAL.replace("targets = [\"out\"]", "targets = [\"nope\"]")
        + "\n[targets.old]\nkind = \"teams\"\nurl = \"https://acme.webhook.office.com/webhookb2/x\"\n";
    let err = load_text(&text).unwrap_err().to_string();
    assert!(err.contains("unknown target \"nope\""), "{err}");
    assert!(err.contains("retired"), "{err}");
}

#[test]
fn candidate_targets_are_deduplicated() {
    let text = MINIMAL.to_string() + "\n[[hooks.routes]]\ntargets = [\"out\"]\nmin_urgency = 80\n";
    let s = load_text(&text).unwrap();
    assert_eq!(s.hooks[0].candidate_targets(), vec!["out".to_string()]);
}

#[test]
fn env_overrides_scalars() {
    let s = load_with(
        MINIMAL,
        &[
            ("SEKOIA_RELAY__SERVER__LISTEN", "0.0.0.0:9000"),
            ("SEKOIA_RELAY__DELIVERY__MAX_ATTEMPTS", "3"),
        ],
    )
    .unwrap();
    assert_eq!(s.server.listen, "0.0.0.0:9000");
    assert_eq!(s.delivery.max_attempts, 3);
}

#[test]
fn variables_expand_inside_the_file() {
    let text = MINIMAL.to_string() + "\n[sekoia]\napi_key = \"${KEY}\"\n";
    let s = load_with(&text, &[("KEY", "secret")]).unwrap();
    assert_eq!(s.sekoia.api_key.expose_secret(), "secret");
    let err = load_with(&text, &[]).unwrap_err().to_string();
    assert!(
        err.contains("KEY") && err.contains("sekoia.api_key"),
        "{err}"
    );
}

#[test]
fn every_missing_variable_is_reported_at_once() {
    let text = MINIMAL.to_string()
        + "\n[sekoia]\napi_key = \"${KEY}\"\n[targets.mm]\nkind = \"mattermost\"\nurl = \"${MATTERMOST_WEBHOOK_URL}\"\n";
    let err = load_with(&text, &[]).unwrap_err().to_string();
    assert!(
        err.contains("KEY") && err.contains("sekoia.api_key"),
        "{err}"
    );
    assert!(
        err.contains("MATTERMOST_WEBHOOK_URL") && err.contains("targets.mm.url"),
        "{err}"
    );
}

#[test]
fn commands_that_send_nothing_skip_unset_secrets_only() {
    let text = MINIMAL.to_string()
        + "\n[sekoia]\napi_key = \"${KEY}\"\n[targets.mm]\nkind = \"mattermost\"\nurl = \"${MM_URL}\"\n\
           [targets.soar]\nkind = \"webhook\"\nurl = \"https://soar.invalid/x\"\nheaders = { Authorization = \"Bearer ${TOKEN}\" }\n";
    let skip = |text: &str, env: &[(&str, &str)]| {
        load_str_with(
            text,
            Path::new("config.toml"),
            Path::new("."),
            &env_of(env),
            Secrets::Skip,
        )
    };
    let s = skip(&text, &[]).expect("secrets are not needed");
    assert_eq!(
        s.targets["mm"].url.as_ref().unwrap().expose_secret(),
        UNRESOLVED_SECRET
    );
    // A set variable still resolves.
    let s = skip(&text, &[("MM_URL", "https://mm.invalid/hooks/1")]).unwrap();
    assert_eq!(
        s.targets["mm"].url.as_ref().unwrap().expose_secret(),
        "https://mm.invalid/hooks/1"
    );
    // Anything else must still resolve: the store path is needed by dead-letters.
    let err = skip(
        &format!("{text}[store]\npath = \"${{DATA}}/relay.db\"\n"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("DATA") && err.contains("store.path"), "{err}");
    assert!(load_with(&text, &[]).is_err(), "the server needs them");
}

#[test]
fn send_test_needs_the_secrets_of_its_target_only() {
    let text = MINIMAL.to_string()
        + "\n[targets.mm]\nkind = \"mattermost\"\nurl = \"${MM_URL}\"\n[targets.slack]\nkind = \"slack\"\nurl = \"${SLACK_URL}\"\n";
    let only = |target: &str, env: &[(&str, &str)]| {
        load_str_with(
            &text,
            Path::new("config.toml"),
            Path::new("."),
            &env_of(env),
            Secrets::SkipAllBut(target.to_string()),
        )
    };
    assert!(only("slack", &[("SLACK_URL", "https://hooks.slack.invalid/x")]).is_ok());
    let err = only("slack", &[]).unwrap_err().to_string();
    assert!(
        err.contains("SLACK_URL") && !err.contains("MM_URL"),
        "{err}"
    );
}

#[test]
fn a_mistyped_override_is_blamed_on_its_variable() {
    let err = load_with(MINIMAL, &[("SEKOIA_RELAY__SERVER__LISTN", "0.0.0.0:1")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("environment variable SEKOIA_RELAY__SERVER__LISTN (sets `server.listn`)"),
        "{err}"
    );
    assert!(err.contains("unknown field `listn`"), "{err}");
    // A mistake in the file itself is still the file's.
    let err = load_with(
        &format!("{MINIMAL}\n[server]\nlistn = \"x\"\n"),
        &[("SEKOIA_RELAY__SERVER__LISTEN", "0.0.0.0:1")],
    )
    .unwrap_err()
    .to_string();
    assert!(!err.contains("environment variable"), "{err}");
}

#[test]
fn a_value_from_an_empty_variable_names_it() {
    let text = MINIMAL.to_string()
        + "\n[targets.slack]\nkind = \"slack\"\nurl = \"${SLACK_WEBHOOK_URL}\"\n";
    let err = load_with(&text, &[("SLACK_WEBHOOK_URL", "")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("targets.slack.url is not an http(s) URL (it is empty: the environment variable SLACK_WEBHOOK_URL is set to \"\")"),
        "{err}"
    );
    let err = load_with(&text, &[("SLACK_WEBHOOK_URL", "hooks.slack.com/x")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("(its value comes from the environment variable SLACK_WEBHOOK_URL)"),
        "{err}"
    );
}

#[test]
fn public_url_needs_a_scheme() {
    for bad in [
        "relay.example.com",
        "localhost:8000",
        "ftp://relay.example.com",
    ] {
        let err = load_text(&format!("[server]\npublic_url = \"{bad}\"\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.public_url"), "{bad}: {err}");
    }
    let err = load_with(
        MINIMAL,
        &[("SEKOIA_RELAY__SERVER__PUBLIC_URL", "relay.example.com")],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "(its value comes from the environment variable SEKOIA_RELAY__SERVER__PUBLIC_URL)"
        ),
        "{err}"
    );
    // A default used because the variable is unset is not blamed on the variable.
    let err = load_text(&format!(
        "[server]\npublic_url = \"${{PUBLIC:-relay.example.com}}\"\n{MINIMAL}"
    ))
    .unwrap_err()
    .to_string();
    assert!(!err.contains("environment variable"), "{err}");
    let s = load_text(&format!(
        "[server]\npublic_url = \"https://relay.example.com\"\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(s.server.public_url, "https://relay.example.com");
}

#[test]
fn per_kind_rate_limit_defaults() {
    assert_eq!(TargetKind::Slack.spec().default_rate_limit_per_sec(), 1);
    assert_eq!(TargetKind::Teams.spec().default_rate_limit_per_sec(), 4);
    assert_eq!(TargetKind::Webhook.spec().default_rate_limit_per_sec(), 0);
}

#[test]
fn store_url_comes_from_the_environment_and_keeps_sqlite_when_empty() {
    let text = format!("[store]\nurl = \"${{DATABASE_URL:-}}\"\n{MINIMAL}");
    let sqlite = load_with(&text, &[]).unwrap();
    assert!(!sqlite.store.is_postgres());
    let pg = load_with(&text, &[("DATABASE_URL", "postgres://u:pw@db/relay")]).unwrap();
    assert!(pg.store.is_postgres());
    assert_eq!(pg.store.lease_secs, 30, "default lease ≤ 30 s");
    assert!(pg.store.pool_size >= 1);
}

#[test]
fn store_url_and_path_together_say_which_to_keep_without_the_password() {
    let text =
        format!("[store]\nurl = \"postgres://u:hunter2@db/relay\"\npath = \"other.db\"\n{MINIMAL}");
    let err = load_text(&text).unwrap_err().to_string();
    assert!(err.contains("keep url and remove path"), "{err}");
    assert!(err.contains("empty url to stay on SQLite"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let text = format!("[store]\nurl = \"mysql://u:hunter2@db/relay\"\n{MINIMAL}");
    let err = load_text(&text).unwrap_err().to_string();
    assert!(err.contains("must start with postgres://"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn digest_keys_have_per_kind_defaults_and_are_checked() {
    let s = load_text(&format!(
        "[targets.s]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/x\"\n\
         [targets.c]\nkind = \"chime\"\nurl = \"https://hooks.chime.aws/incomingwebhooks/x?token=y\"\n\
         digest_max_items = 30\n{MINIMAL}"
    ))
    .unwrap();
    let (slack, chime, console) = (&s.targets["s"], &s.targets["c"], &s.targets["out"]);
    assert_eq!((slack.digest_after(), slack.digest_items()), (5, 20));
    assert_eq!(
        chime.digest_items(),
        6,
        "capped to what one Chime message holds"
    );
    assert_eq!(console.digest_after(), 0);
    assert!(slack.storm_control() && !console.storm_control());
    let err = load_text(&format!(
        "[targets.pd]\nkind = \"webhook\"\nurl = \"https://x.test/\"\ndigest_after = 3\n{MINIMAL}"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("targets.pd") && err.contains("digest_template"),
        "{err}"
    );
    let err = load_text(&format!(
        "[targets.s]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/x\"\ndigest_max_items = 0\n{MINIMAL}"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("digest_max_items must be between 1 and 40"),
        "{err}"
    );
}

#[test]
fn delivery_threads_default_to_automatic_and_are_bounded() {
    assert_eq!(load_text(MINIMAL).unwrap().delivery.threads, 0);
    let s = load_text(&format!("{MINIMAL}\n[delivery]\nthreads = 3\n")).unwrap();
    assert_eq!(s.delivery.threads, 3);
    let err = load_text(&format!("{MINIMAL}\n[delivery]\nthreads = 100000\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("delivery.threads must be at most 256"),
        "{err}"
    );
}

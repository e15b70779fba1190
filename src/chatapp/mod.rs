//! Living alert messages for the bot-token kinds (`slack_app`, `mattermost_app`).
//!
//! The first event of an alert posts its card and the message reference (channel, Slack `ts`
//! or Mattermost post id) is stored per target ([`crate::store::MessageRef`]); later events
//! edit that card in place and add a short thread reply saying what changed, as `on_update`
//! says. A message deleted in the chat tool is posted anew and its new reference stored.
//! Each tool's API and the meaning of its answers live in [`slack`] and [`mattermost`].

pub mod mattermost;
pub mod signing;
pub mod slack;
pub mod triage;

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::configuration::TargetSettings;
use crate::delivery::policy::Verdict;
use crate::domain::TargetKind;
use crate::store::{now_ms, MessageRef, Store};

/// What a later event of an alert does to the alert's message (`on_update`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum OnUpdate {
    /// Edit the card and reply in its thread with what changed (the default).
    #[default]
    #[serde(rename = "edit+reply")]
    EditReply,
    /// Edit the card only: a quiet channel.
    #[serde(rename = "edit")]
    Edit,
    /// Leave the card and reply in its thread.
    #[serde(rename = "reply")]
    Reply,
    /// Post a new card for every event, like an incoming webhook.
    #[serde(rename = "new")]
    New,
}

/// The chat tool calls one event needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Post a new card (and remember it, for an alert).
    Post,
    /// Edit the card, then reply in its thread.
    EditReply,
    Edit,
    Reply,
}

/// Which calls an event makes.
///
/// Rule: an event whose alert has no stored message (its first event, a non-alert event, or
/// one older than `retention_days`) posts a card; otherwise `on_update` decides, `new`
/// posting again. Reason: one message per incident that always shows its current state,
/// while a channel that wants every event as its own message can still have that.
pub fn plan(on_update: OnUpdate, has_message: bool) -> Plan {
    match (has_message, on_update) {
        (false, _) | (true, OnUpdate::New) => Plan::Post,
        (true, OnUpdate::EditReply) => Plan::EditReply,
        (true, OnUpdate::Edit) => Plan::Edit,
        (true, OnUpdate::Reply) => Plan::Reply,
    }
}

/// The thread reply for an event: what changed, in one line of plain text.
///
/// Rule: "Updated: status Ongoing, urgency 80" from the event's `attributes.updated` (names
/// preferred to uuids, `_name` suffixes dropped, at most 6 fields, values cut to 80
/// characters); "Alert updated" when the event lists nothing; other actions say "Alert
/// {action}". Reason: the edited card already shows the whole state; the reply is the
/// notification that something moved, and must stay short. Values are alert data: the caller
/// escapes them for the tool's markup.
pub fn change_summary(event: &Value) -> String {
    let action = event.get("action").and_then(Value::as_str).unwrap_or("");
    if action != "updated" {
        return format!("Alert {}", if action.is_empty() { "event" } else { action });
    }
    let parts: Vec<String> = crate::domain::event::updated_fields(event)
        .into_iter()
        .take(6)
        .map(|(name, text)| format!("{name} {}", crate::render::truncate_chars(&text, 80)))
        .collect();
    if parts.is_empty() {
        "Alert updated".into()
    } else {
        format!("Updated: {}", parts.join(", "))
    }
}

/// A chat tool's answer to the calls of one delivery, classified like an HTTP answer.
#[derive(Debug)]
pub struct ChatAnswer {
    /// The HTTP status of the call that decided (None: transport failure).
    pub status: Option<u16>,
    pub verdict: Verdict,
    pub retry_after: Option<Duration>,
    pub response: Option<String>,
    /// Empty when delivered; else what went wrong, never the token.
    pub error: String,
}

impl ChatAnswer {
    pub(crate) fn delivered(status: u16) -> Self {
        ChatAnswer {
            status: Some(status),
            verdict: Verdict::Delivered,
            retry_after: None,
            response: None,
            error: String::new(),
        }
    }

    pub(crate) fn transport(error: String) -> Self {
        ChatAnswer {
            status: None,
            verdict: Verdict::Retry,
            retry_after: None,
            response: None,
            error,
        }
    }
}

/// The result of one call to a chat tool.
#[derive(Debug)]
pub(crate) enum Call<T> {
    Ok(T),
    /// The message (or the thread it belongs to) no longer exists: post anew.
    Gone,
    Failed(ChatAnswer),
}

/// The two tools behind one interface, so the living-message logic is written once.
pub(crate) enum Api<'a> {
    Slack(slack::SlackApi<'a>),
    Mattermost(mattermost::MattermostApi<'a>),
}

impl Api<'_> {
    async fn post(&self, card: &Value) -> Call<MessageRef> {
        match self {
            Api::Slack(a) => a.post(card).await,
            Api::Mattermost(a) => a.post(card).await,
        }
    }

    async fn edit(&self, at: &MessageRef, card: &Value) -> Call<()> {
        match self {
            Api::Slack(a) => a.edit(at, card).await,
            Api::Mattermost(a) => a.edit(at, card).await,
        }
    }

    async fn reply(&self, at: &MessageRef, text: &str) -> Call<()> {
        match self {
            Api::Slack(a) => a.reply(at, text).await,
            Api::Mattermost(a) => a.reply(at, text).await,
        }
    }
}

/// The API client of a bot-token target, or why there is none (config checks make this rare).
pub(crate) fn api<'a>(
    http: &'a reqwest::Client,
    target: &'a TargetSettings,
) -> Result<Api<'a>, String> {
    use secrecy::ExposeSecret;
    let token = target
        .token
        .as_ref()
        .map(|t| t.expose_secret())
        .filter(|t| !t.is_empty())
        .ok_or("the target has no `token`")?;
    let base = target.post_url().ok_or("the target has no `url`")?;
    match target.kind {
        TargetKind::SlackApp => Ok(Api::Slack(slack::SlackApi {
            http,
            base,
            token,
            channel: target.channel.as_deref().unwrap_or(""),
        })),
        TargetKind::MattermostApp => Ok(Api::Mattermost(mattermost::MattermostApi {
            http,
            base,
            token,
            channel_id: target.channel_id.as_deref().unwrap_or(""),
        })),
        other => Err(format!("kind {other} does not use a chat API")),
    }
}

/// What the triage buttons of a card need: the hook whose API key lists and changes the
/// alert's workflow, and where the relay is reachable (`server.public_url`, for Mattermost).
#[derive(Clone, Copy)]
pub struct Buttons<'a> {
    pub hook: Option<(&'a str, &'a crate::sekoia::Credentials)>,
    pub public_url: &'a str,
}

/// Deliver one event's rendered card to a bot-token target: post, or edit and reply, as
/// [`plan`] says, keeping the stored message reference current.
pub async fn deliver(
    http: &reqwest::Client,
    store: &Store,
    target_name: &str,
    target: &TargetSettings,
    event_json: &str,
    body: &str,
    buttons: Buttons<'_>,
) -> ChatAnswer {
    let (hook, public_url) = (buttons.hook, buttons.public_url);
    let permanent = |error: String| ChatAnswer {
        status: None,
        verdict: Verdict::Permanent,
        retry_after: None,
        response: None,
        error,
    };
    let api = match api(http, target) {
        Ok(a) => a,
        Err(e) => return permanent(e),
    };
    let mut card: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return permanent(format!("the rendered card is not JSON: {e}")),
    };
    let event: Value = serde_json::from_str(event_json).unwrap_or(Value::Null);
    let alert = event
        .pointer("/attributes/uuid")
        .and_then(Value::as_str)
        .filter(|_| event.get("type").and_then(Value::as_str) == Some("alert"));
    if let (Some(uuid), Some((hook, creds))) = (alert, hook) {
        if buttons_on(target, public_url)
            && event.get("action").and_then(Value::as_str) != Some("deleted")
        {
            let on = ButtonsFor {
                target_name,
                target,
                public_url,
            };
            add_buttons(http, &mut card, &on, hook, creds, uuid, &event).await;
        }
    }
    // Two events of one alert handled at once would both find no message and post two
    // cards: one alert's events go through here one at a time (in this process).
    let _turn = match alert {
        Some(uuid) => Some(alert_turn(target_name, uuid).await),
        None => None,
    };
    let stored = match alert {
        Some(uuid) => match store.message_ref(target_name, uuid).await {
            Ok(r) => r,
            Err(e) => {
                // Posting anyway would leave a second card once the store is back: retry.
                return ChatAnswer::transport(format!(
                    "cannot read the alert's message reference: {e}"
                ));
            }
        },
        None => None,
    };
    let summary = target
        .kind
        .spec()
        .md_escape(&change_summary(&event))
        .into_owned();
    let post_new = || async {
        match api.post(&card).await {
            Call::Ok(r) => {
                if let Some(uuid) = alert {
                    if let Err(e) = store.put_message_ref(target_name, uuid, &r).await {
                        // Delivered all the same: the next event posts a new card.
                        tracing::warn!(error = %e, "posted, but cannot remember the message: the next event posts a new one");
                    }
                }
                ChatAnswer::delivered(200)
            }
            Call::Gone => permanent("the chat tool says the channel does not exist".into()),
            Call::Failed(a) => a,
        }
    };
    let Some(at) = stored else {
        return post_new().await;
    };
    match plan(target.on_update, true) {
        Plan::Post => post_new().await,
        Plan::Edit | Plan::EditReply => {
            match api.edit(&at, &card).await {
                Call::Ok(()) => {}
                Call::Gone => {
                    tracing::info!(
                        "the alert's message was deleted in the chat tool: posting a new one"
                    );
                    return post_new().await;
                }
                Call::Failed(a) => return a,
            }
            if target.on_update == OnUpdate::Edit {
                return ChatAnswer::delivered(200);
            }
            reply_or_post(&api, &at, &summary, post_new).await
        }
        Plan::Reply => reply_or_post(&api, &at, &summary, post_new).await,
    }
}

/// `send-test` for a bot-token kind: post the card once (no buttons, nothing remembered) and
/// say what the tool answered.
pub async fn post_test(http: &reqwest::Client, target: &TargetSettings, body: &str) -> ChatAnswer {
    let api = match api(http, target) {
        Ok(a) => a,
        Err(e) => {
            return ChatAnswer {
                verdict: Verdict::Permanent,
                ..ChatAnswer::transport(e)
            }
        }
    };
    let card: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => {
            return ChatAnswer {
                verdict: Verdict::Permanent,
                ..ChatAnswer::transport(format!("the rendered card is not JSON: {e}"))
            }
        }
    };
    match api.post(&card).await {
        Call::Ok(r) => ChatAnswer {
            response: Some(format!(
                "posted in channel {} as message {}",
                r.channel, r.message_id
            )),
            ..ChatAnswer::delivered(200)
        },
        Call::Gone => ChatAnswer {
            status: Some(404),
            verdict: Verdict::Permanent,
            ..ChatAnswer::transport("the chat tool says the channel does not exist".into())
        },
        Call::Failed(a) => a,
    }
}

/// Whether a target's cards carry triage buttons.
///
/// Rule: a `slack_app` with its `signing_secret` (the relay cannot verify presses without
/// it); a `mattermost_app` once `server.public_url` is set (Mattermost calls the button's
/// absolute URL, so it must know where the relay is). Reason: a button that cannot work is
/// worse than none.
pub fn buttons_on(target: &TargetSettings, public_url: &str) -> bool {
    use secrecy::ExposeSecret;
    match target.kind {
        TargetKind::SlackApp => target
            .signing_secret
            .as_ref()
            .is_some_and(|s| !s.expose_secret().is_empty()),
        TargetKind::MattermostApp => {
            !public_url.trim().is_empty()
                && target
                    .token
                    .as_ref()
                    .is_some_and(|s| !s.expose_secret().is_empty())
        }
        _ => false,
    }
}

/// Where a Mattermost button sends its press.
pub fn mattermost_action_url(public_url: &str) -> String {
    format!(
        "{}/integrations/mattermost/actions",
        public_url.trim_end_matches('/')
    )
}

struct ButtonsFor<'a> {
    target_name: &'a str,
    target: &'a TargetSettings,
    public_url: &'a str,
}

/// Append the alert's workflow actions as buttons; without them (the API failed) the card
/// goes out as it is: the alert matters more than its buttons.
async fn add_buttons(
    http: &reqwest::Client,
    card: &mut Value,
    on: &ButtonsFor<'_>,
    hook: &str,
    creds: &crate::sekoia::Credentials,
    uuid: &str,
    event: &Value,
) {
    use secrecy::ExposeSecret;
    let actions = match crate::sekoia::workflow::actions(http, creds, uuid).await {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, "no triage buttons: cannot list the alert's workflow actions");
            return;
        }
    };
    let short_id = event
        .pointer("/attributes/short_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    match on.target.kind {
        TargetKind::MattermostApp => {
            let token = on
                .target
                .token
                .as_ref()
                .map(|t| t.expose_secret())
                .unwrap_or("");
            let secret = signing::mattermost_secret(token, on.target_name);
            let buttons = triage::mattermost_buttons(
                on.target_name,
                &secret,
                &mattermost_action_url(on.public_url),
                hook,
                uuid,
                short_id,
                &actions,
            );
            // Mattermost shows buttons inside an attachment: the card's last one, or a new one.
            match card.get_mut("attachments").and_then(Value::as_array_mut) {
                Some(list) if !list.is_empty() => {
                    if let Some(last) = list.last_mut() {
                        last["actions"] = Value::Array(buttons);
                    }
                }
                _ => card["attachments"] = serde_json::json!([{ "actions": buttons }]),
            }
        }
        _ => {
            let block = triage::slack_buttons(hook, uuid, short_id, &actions);
            match card.get_mut("blocks") {
                Some(Value::Array(blocks)) => blocks.push(block),
                _ => card["blocks"] = Value::Array(vec![block]),
            }
        }
    }
}

type Turns = std::sync::Mutex<
    std::collections::HashMap<(String, String), std::sync::Arc<tokio::sync::Mutex<()>>>,
>;
static TURNS: std::sync::LazyLock<Turns> = std::sync::LazyLock::new(Default::default);

/// This alert's turn in this target: held while its message is read, posted or edited.
async fn alert_turn(target: &str, uuid: &str) -> AlertTurn {
    let key = (target.to_string(), uuid.to_string());
    let lock = TURNS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.clone())
        .or_default()
        .clone();
    let guard = lock.clone().lock_owned().await;
    AlertTurn {
        key,
        lock,
        _guard: Some(guard),
    }
}

struct AlertTurn {
    key: (String, String),
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for AlertTurn {
    /// Forget the alert's lock once nobody else waits for it, so the map stays small.
    fn drop(&mut self) {
        self._guard = None;
        let mut turns = TURNS.lock().unwrap_or_else(|e| e.into_inner());
        // Held by the map and by this turn only: nobody else waits.
        if std::sync::Arc::strong_count(&self.lock) == 2 {
            turns.remove(&self.key);
        }
    }
}

async fn reply_or_post<F, Fut>(
    api: &Api<'_>,
    at: &MessageRef,
    text: &str,
    post_new: F,
) -> ChatAnswer
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ChatAnswer>,
{
    match api.reply(at, text).await {
        Call::Ok(()) => ChatAnswer::delivered(200),
        Call::Gone => post_new().await,
        Call::Failed(a) => a,
    }
}

/// A transport error without its URL (see the delivery sender).
pub(crate) fn describe(e: reqwest::Error) -> String {
    crate::delivery::describe_transport_error(e)
}

/// The answer's body, bounded like every target answer the relay reads.
pub(crate) async fn read_body(mut res: reqwest::Response) -> String {
    const MAX: usize = 64 * 1024;
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        let room = MAX - buf.len();
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= MAX {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A fresh reference for a message the tool just created.
pub(crate) fn new_ref(channel: String, message_id: String) -> MessageRef {
    MessageRef {
        channel,
        message_id,
        created_at_ms: now_ms(),
    }
}

/// Config problems of a target's bot-token keys.
///
/// Rule: `slack_app` needs `token` and `channel`, `mattermost_app` needs `url`, `token` and
/// `channel_id`; `token`, `api_url`, `channel_id`, `signing_secret` belong to those kinds only,
/// and `api_url` only to `slack_app`. Reason: a missing key would only show as a dead letter
/// at the first alert, and a key on the wrong kind is a mistake that would be silently ignored.
pub fn config_problems(name: &str, t: &TargetSettings) -> Vec<String> {
    use secrecy::ExposeSecret;
    let mut problems = Vec::new();
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let has_token = t
        .token
        .as_ref()
        .is_some_and(|s| !s.expose_secret().trim().is_empty());
    match t.kind {
        TargetKind::SlackApp => {
            if !has_token {
                problems.push(format!("targets.{name}: `token` is required for kind slack_app (the bot token, xoxb-…, e.g. \"${{SLACK_BOT_TOKEN}}\")"));
            }
            if !set(&t.channel) {
                problems.push(format!(
                    "targets.{name}: `channel` is required for kind slack_app (a channel id like C0123456789, or a name)"
                ));
            }
            if t.url.is_some() {
                problems.push(format!(
                    "targets.{name}: kind slack_app takes `api_url` (default {}), not `url`",
                    crate::targets::slack_app::SLACK_API_URL
                ));
            }
            if let Some(u) = t.api_url.as_deref() {
                let ok = url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
                if !ok {
                    problems.push(format!("targets.{name}.api_url is not an http(s) URL"));
                }
            }
        }
        TargetKind::MattermostApp => {
            if !has_token {
                problems.push(format!("targets.{name}: `token` is required for kind mattermost_app (a bot or personal access token)"));
            }
            if !set(&t.channel_id) {
                problems.push(format!(
                    "targets.{name}: `channel_id` is required for kind mattermost_app (the channel's id, not its name)"
                ));
            }
            if t.api_url.is_some() {
                problems.push(format!(
                    "targets.{name}: kind mattermost_app takes the server as `url`, not `api_url`"
                ));
            }
        }
        kind => {
            for (key, present) in [
                ("token", t.token.is_some()),
                ("api_url", t.api_url.is_some()),
                ("channel_id", t.channel_id.is_some()),
                ("signing_secret", t.signing_secret.is_some()),
                ("on_update", t.on_update != OnUpdate::default()),
            ] {
                if present {
                    problems.push(format!(
                        "targets.{name}: `{key}` is only for kinds slack_app and mattermost_app, not {kind}"
                    ));
                }
            }
        }
    }
    problems
}

/// Warnings about a bot-token target's keys: what works, but probably not as meant.
///
/// Rule: a Slack token that is not a bot token (`xoxb-`); a Slack signing secret that is not
/// 32 hex digits; a Mattermost token or `channel_id` that is not 26 lowercase letters and
/// digits (Mattermost's id shape: a channel *name* is the usual mistake); and a target
/// without buttons, saying what turns them on (`signing_secret` for Slack,
/// `server.public_url` for Mattermost). Reason: each of these shows only at the first alert
/// (a refused post, a missing button), when nobody is looking at the config.
pub fn config_warnings(name: &str, t: &TargetSettings, public_url: &str) -> Vec<String> {
    use secrecy::ExposeSecret;
    let mut out = Vec::new();
    let token = t
        .token
        .as_ref()
        .map(|s| s.expose_secret().trim())
        .unwrap_or("");
    let mattermost_id = |s: &str| {
        s.len() == 26
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match t.kind {
        TargetKind::SlackApp => {
            if !token.is_empty() && !token.starts_with("xoxb-") {
                out.push(format!("targets.{name}.token does not look like a Slack bot token (xoxb-…): an app-level (xapp-) token cannot post, a user token (xoxp-) posts as that user"));
            }
            match t.signing_secret.as_ref().map(|s| s.expose_secret().trim().to_string()) {
                Some(s) if !s.is_empty() => {
                    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                        out.push(format!("targets.{name}.signing_secret is not 32 hex digits: copy the Signing Secret from the app's Basic Information page (not the client secret or a token)"));
                    }
                }
                _ => out.push(format!("targets.{name}: no triage buttons on the cards: set signing_secret (the Slack app's Signing Secret) to add Acknowledge/Close")),
            }
        }
        TargetKind::MattermostApp => {
            if !token.is_empty() && !mattermost_id(token) {
                out.push(format!("targets.{name}.token does not look like a Mattermost access token (26 lowercase letters and digits)"));
            }
            if let Some(c) = t
                .channel_id
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
            {
                if !mattermost_id(c) {
                    out.push(format!("targets.{name}.channel_id {c:?} does not look like a Mattermost channel id (26 lowercase letters and digits; a channel's name does not work here)"));
                }
            }
            if public_url.trim().is_empty() {
                out.push(format!("targets.{name}: no triage buttons on the cards: Mattermost calls the relay back at server.public_url, which is not set"));
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target(text: &str) -> TargetSettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn token_secret_and_channel_shapes_are_warned_about() {
        let slack = |extra: &str| {
            target(&format!(
                "kind = \"slack_app\"\ntoken = \"xoxb-1-2-x\"\nchannel = \"C1\"\n{extra}"
            ))
        };
        let good = slack("signing_secret = \"8f742231b10e8888abcd99aaabbb85a5\"");
        assert!(config_warnings("s", &good, "").is_empty());
        let w = config_warnings("s", &slack(""), "");
        assert!(w.len() == 1 && w[0].contains("set signing_secret"), "{w:?}");
        let w = config_warnings("s", &slack("signing_secret = \"xoxb-not-it\""), "");
        assert!(w[0].contains("32 hex digits"), "{w:?}");
        let mut user = good.clone();
        user.token = Some(secrecy::SecretString::from("xapp-1-A-1-x".to_string()));
        assert!(config_warnings("s", &user, "")[0].contains("xoxb-"));

        let mm = |token: &str, channel: &str| {
            target(&format!("kind = \"mattermost_app\"\nurl = \"https://mm.test\"\ntoken = \"{token}\"\nchannel_id = \"{channel}\"\n"))
        };
        let id = "abcdefghijklmnopqrstuvwxyz";
        assert!(config_warnings("m", &mm(id, id), "https://relay.test").is_empty());
        let w = config_warnings("m", &mm(id, id), "");
        assert!(w.len() == 1 && w[0].contains("server.public_url"), "{w:?}");
        let w = config_warnings("m", &mm("short", "town-square"), "https://relay.test");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[1].contains("\"town-square\"") && !w[0].contains("short"),
            "{w:?}"
        );
    }

    #[test]
    fn the_first_event_posts_and_later_ones_follow_on_update() {
        for mode in [
            OnUpdate::EditReply,
            OnUpdate::Edit,
            OnUpdate::Reply,
            OnUpdate::New,
        ] {
            assert_eq!(plan(mode, false), Plan::Post);
        }
        assert_eq!(plan(OnUpdate::EditReply, true), Plan::EditReply);
        assert_eq!(plan(OnUpdate::Edit, true), Plan::Edit);
        assert_eq!(plan(OnUpdate::Reply, true), Plan::Reply);
        assert_eq!(plan(OnUpdate::New, true), Plan::Post);
    }

    #[test]
    fn on_update_names_are_the_documented_ones() {
        #[derive(Deserialize)]
        struct T {
            on_update: OnUpdate,
        }
        for (name, mode) in [
            ("edit+reply", OnUpdate::EditReply),
            ("edit", OnUpdate::Edit),
            ("reply", OnUpdate::Reply),
            ("new", OnUpdate::New),
        ] {
            let t: T = toml::from_str(&format!("on_update = {name:?}")).unwrap();
            assert_eq!(t.on_update, mode);
        }
        assert!(toml::from_str::<T>("on_update = \"edit+new\"").is_err());
    }

    #[test]
    fn the_reply_says_what_changed_in_one_short_line() {
        let ev = json!({"action": "updated", "attributes": {"updated": {
            "status": "1f2f88d5-ff5b-48bf-bbbc-00c2fff82d9f", "status_name": "Ongoing",
            "urgency": 80}}});
        assert_eq!(change_summary(&ev), "Updated: status Ongoing, urgency 80");
        let ev = json!({"action": "updated", "attributes": {}});
        assert_eq!(change_summary(&ev), "Alert updated");
        let ev =
            json!({"action": "updated", "attributes": {"updated": {"title": "x".repeat(200)}}});
        assert_eq!(
            change_summary(&ev).chars().count(),
            "Updated: title ".len() + 80
        );
        assert_eq!(
            change_summary(&json!({"action": "deleted"})),
            "Alert deleted"
        );
    }
}

//! The kinds of target a message can go to. Only the names live here; what each kind does
//! (limits, envelope, template, answers) lives in its own module under [`crate::targets`].

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(try_from = "String")]
pub enum TargetKind {
    Teams,
    Slack,
    Mattermost,
    Chime,
    GoogleChat,
    Discord,
    PagerDuty,
    Webex,
    Webhook,
    Console,
    SlackApp,
    MattermostApp,
}

impl TargetKind {
    pub const ALL: [TargetKind; 12] = [
        TargetKind::Teams,
        TargetKind::Slack,
        TargetKind::Mattermost,
        TargetKind::Chime,
        TargetKind::GoogleChat,
        TargetKind::Discord,
        TargetKind::PagerDuty,
        TargetKind::Webex,
        TargetKind::Webhook,
        TargetKind::Console,
        TargetKind::SlackApp,
        TargetKind::MattermostApp,
    ];

    /// The name used in config (`kind = "…"`) and in `target.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Teams => "teams",
            TargetKind::Slack => "slack",
            TargetKind::Mattermost => "mattermost",
            TargetKind::Chime => "chime",
            TargetKind::GoogleChat => "google_chat",
            TargetKind::Discord => "discord",
            TargetKind::PagerDuty => "pagerduty",
            TargetKind::Webex => "webex",
            TargetKind::Webhook => "webhook",
            TargetKind::Console => "console",
            TargetKind::SlackApp => "slack_app",
            TargetKind::MattermostApp => "mattermost_app",
        }
    }

    /// The kind named `name`, as written in config and in `target.kind`.
    pub fn parse(name: &str) -> Option<TargetKind> {
        TargetKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// "teams, slack, …, webhook or console": the names for error messages.
    pub fn expected_names() -> String {
        let names: Vec<&str> = TargetKind::ALL.iter().map(|k| k.as_str()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }
}

impl TryFrom<String> for TargetKind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        TargetKind::parse(&value).ok_or_else(|| {
            format!(
                "unknown target kind {value:?} (expected {})",
                TargetKind::expected_names()
            )
        })
    }
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_kinds() {
        for kind in TargetKind::ALL {
            assert_eq!(TargetKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(
            TargetKind::try_from("irc".to_string()).unwrap_err(),
            "unknown target kind \"irc\" (expected teams, slack, mattermost, chime, google_chat, discord, pagerduty, webex, webhook, console, slack_app or mattermost_app)"
        );
    }
}

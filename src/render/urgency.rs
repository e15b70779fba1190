//! Urgency → label, colour and emoji, per target kind.

use crate::domain::TargetKind;

/// The five urgency bands of the Alert API's `urgency.display` vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrgencyBand {
    Low,
    Moderate,
    High,
    Major,
    Urgent,
}

impl UrgencyBand {
    /// Band of an urgency value (0–100), in 20-point steps: 0–19 Low, 20–39 Moderate,
    /// 40–59 High, 60–79 Major, 80–100 Urgent.
    ///
    /// SEKOIA does not document the bands; these fit every `display` value seen in real
    /// alerts (20 and 30 Moderate, 47 High, 60 Major). They are only used when `display` is
    /// missing and to pick a colour, since `display` is shown as received. Out-of-range values
    /// clamp.
    pub fn from_value(value: i64) -> UrgencyBand {
        match value {
            i64::MIN..=19 => UrgencyBand::Low,
            20..=39 => UrgencyBand::Moderate,
            40..=59 => UrgencyBand::High,
            60..=79 => UrgencyBand::Major,
            _ => UrgencyBand::Urgent,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            UrgencyBand::Low => "Low",
            UrgencyBand::Moderate => "Moderate",
            UrgencyBand::High => "High",
            UrgencyBand::Major => "Major",
            UrgencyBand::Urgent => "Urgent",
        }
    }
}

/// Label for an alert's urgency: `urgency.display` as received when present (SEKOIA's own
/// wording, and unknown labels must not be rejected), else the band of the value, else
/// `"Unknown"` so a message never shows an empty urgency.
pub fn urgency_label(display: Option<&str>, value: Option<i64>) -> String {
    match (display.map(str::trim).filter(|d| !d.is_empty()), value) {
        (Some(d), _) => d.to_string(),
        (None, Some(v)) => UrgencyBand::from_value(v).label().to_string(),
        (None, None) => "Unknown".to_string(),
    }
}

/// Colour of an urgency for a target kind.
///
/// - `teams`: Adaptive Card TextBlock colours are a closed set of names (hex is rejected):
///   Major/Urgent → `Attention` (red), High → `Warning` (amber), Moderate → `Accent` (blue),
///   Low → `Good` (green); unknown → `Default`.
/// - every other kind: a `#RRGGBB` hex (Slack and Mattermost attachment `color`; useful as
///   data in a generic webhook), from dark red for Urgent down to green for Low; unknown →
///   grey. Mattermost only accepts `good`/`warning`/`danger` or `#RRGGBB`, hence the `#`.
///
/// The colour comes from the value rather than the label so it works with unknown labels.
pub fn urgency_color(value: Option<i64>, kind: TargetKind) -> &'static str {
    kind.spec()
        .urgency_color(value.map(UrgencyBand::from_value))
}

/// A coloured circle for text-only targets (Slack fields, Chime, console), where a colour bar
/// is not available: the eye finds red before it reads "Urgent".
pub fn urgency_emoji(value: Option<i64>) -> &'static str {
    match value.map(UrgencyBand::from_value) {
        Some(UrgencyBand::Urgent | UrgencyBand::Major) => "🔴",
        Some(UrgencyBand::High) => "🟠",
        Some(UrgencyBand::Moderate) => "🟡",
        Some(UrgencyBand::Low) => "🟢",
        None => "⚪",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_match_observed_display_values() {
        // Seen in SEKOIA fixtures: 20 and 30 Moderate, 47 High, 60 Major.
        assert_eq!(UrgencyBand::from_value(8), UrgencyBand::Low);
        assert_eq!(UrgencyBand::from_value(20), UrgencyBand::Moderate);
        assert_eq!(UrgencyBand::from_value(30), UrgencyBand::Moderate);
        assert_eq!(UrgencyBand::from_value(47), UrgencyBand::High);
        assert_eq!(UrgencyBand::from_value(60), UrgencyBand::Major);
        assert_eq!(UrgencyBand::from_value(100), UrgencyBand::Urgent);
        assert_eq!(UrgencyBand::from_value(-5), UrgencyBand::Low);
        assert_eq!(UrgencyBand::from_value(1000), UrgencyBand::Urgent);
    }

    #[test]
    fn label_prefers_display() {
        assert_eq!(urgency_label(Some("Major"), Some(10)), "Major");
        assert_eq!(urgency_label(Some(" "), Some(70)), "Major");
        assert_eq!(urgency_label(None, Some(85)), "Urgent");
        assert_eq!(urgency_label(None, None), "Unknown");
    }

    #[test]
    fn colours_per_kind() {
        assert_eq!(urgency_color(Some(70), TargetKind::Teams), "Attention");
        assert_eq!(urgency_color(Some(45), TargetKind::Teams), "Warning");
        assert_eq!(urgency_color(Some(25), TargetKind::Teams), "Accent");
        assert_eq!(urgency_color(Some(8), TargetKind::Teams), "Good");
        assert_eq!(urgency_color(None, TargetKind::Teams), "Default");
        assert_eq!(urgency_color(Some(70), TargetKind::Slack), "#D13438");
        assert_eq!(urgency_color(Some(100), TargetKind::Mattermost), "#A4262C");
        assert_eq!(urgency_color(None, TargetKind::Mattermost), "#8A8886");
        assert_eq!(urgency_emoji(Some(70)), "🔴");
        assert_eq!(urgency_emoji(None), "⚪");
    }
}

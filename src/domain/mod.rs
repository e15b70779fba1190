//! Types parsed once at the edge: the version-2 webhook event and its validation, and the
//! names of the target kinds.

pub mod event;
pub mod target_kind;

pub use event::{EventError, WebhookEvent};
pub use target_kind::TargetKind;

//! Types parsed once at the edge: the version-2 webhook event and its validation.

pub mod event;

pub use event::{EventError, WebhookEvent};

//! Stage 4, render: templates, per-kind limits and truncation.

pub mod limits;
pub mod text;
pub mod urgency;

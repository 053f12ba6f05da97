//! End-to-end tests of Ocean: one binary, a module per area.

mod broken_logs;
mod embedded;
mod event_time;
mod formats;
mod kg_changes;
mod oracle;
mod synth;

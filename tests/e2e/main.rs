//! End-to-end tests of Ocean: one binary, a module per area.

mod broken_logs;
mod embedded;
mod formats;
mod oracle;
mod synth;

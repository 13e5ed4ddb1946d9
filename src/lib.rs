//! jitgate: the root package — CLI, configuration and the wiring of proxy, policy and audit.
//!
//! # Layout
//! - `config`: the YAML config file → typed settings of each crate, with field-named errors.
//! - `api`: the admin HTTP API (server) and its client used by the CLI.
//! - `serve`: runs the proxy, the admin API and the audit writer together.
//! - `lifecycle`: what a grant change reaches — live sessions, the audit log, webhooks —
//!   and the background sweeper/sync tasks.
//! - `notify`: signed webhook deliveries of lifecycle steps.
//! - `logging`: the server log subscriber.
//! - `demo`: `jitgate demo` — a throwaway Postgres, a config, a grant, a psql line.
//! - `error`: [`Error`] and [`ConfigError`], the library side's errors.
//! - `runtime`: the tokio runtime of the binary, shaped by `runtime:` in the config.
//! - `stdout`: printing that ends quietly on a closed pipe (`jitgate … | head`).
//! - `witness`: the PostgreSQL grant store as the audit checkpoints' witness.

pub mod api;
pub mod config;
pub mod demo;
pub mod error;
pub mod lifecycle;
pub mod logging;
pub mod notify;
pub mod runtime;
pub mod serve;
pub mod stdout;
pub mod witness;

pub use error::{ConfigError, Error};

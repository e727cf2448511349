//! A refunds gateway compatible with the IdoSell Admin API "Refunds" gate.
//!
//! Layout: [`server`] accepts HTTP and routes requests to a face; [`soap`] parses envelopes and
//! writes responses; [`admin`] is the admin panel (HTML forms over the same operations);
//! [`operations`] is the registry of the nine operations and binds their
//! parameters; [`refunds`] is the domain (rules, fault codes) and knows no XML, JSON, HTTP or
//! SQL; [`store`] holds every SQL statement; [`money`] makes amounts exact; [`shop`] reads shop
//! documents; [`cli`] is the command line behind the thin `main`.

pub mod admin;
pub mod cli;
pub mod clock;
pub mod fatal_signal;
pub mod log_output;
pub mod metrics;
pub mod money;
pub mod operations;
pub mod operators;
pub mod outbox;
pub mod proof_format;
pub mod refunds;
pub mod rest;
pub mod server;
pub mod shop;
pub mod soap;
pub mod store;
pub mod webhooks;

pub use server::{Config, MetricsToken, run, run_on};

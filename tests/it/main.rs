//! The one integration-test binary. Every test starts the real server on a free port over a
//! real ledger and talks to it over HTTP; tests written with `support::on_both_backends!` run
//! once on an SQLite file and once on a PostgreSQL database (see README, "Tests").

mod admin;
mod admin_browser;
mod canonical;
mod cli;
mod concurrency;
mod contract;
mod crash;
mod hardening;
mod hostile;
mod lifecycle;
mod observability;
mod openapi;
mod operators;
mod postgresql;
mod proof;
mod rest;
mod rest_fixtures;
mod schema;
mod soap_fixtures;
mod support;
mod trust;
mod webhooks;

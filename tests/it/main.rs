//! The one integration-test binary. Every test starts the real server on a free port over a
//! real SQLite file and talks to it over HTTP.

mod admin;
mod admin_browser;
mod canonical;
mod cli;
mod concurrency;
mod contract;
mod crash;
mod hostile;
mod lifecycle;
mod observability;
mod openapi;
mod operators;
mod rest;
mod rest_fixtures;
mod schema;
mod soap_fixtures;
mod support;
mod trust;

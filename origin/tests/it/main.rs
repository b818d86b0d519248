//! Integration tests of the origin: real HTTP, real redb files, real `redis-server` processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod bad_input;
mod contract;
mod contract_document;
mod events;
mod fuzz;
mod generated_client;
mod hardening;
mod outage;
mod process;
mod support;
mod webhook_targets;
mod webhooks;

//! Integration tests of the load-test tool: its launcher (processes, Redis, Redis Cluster), its traffic
//! generator, `up`, and quick runs of each measurement against the origin and edge built beside it.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod edge_hits;
mod failover;
mod generator;
mod invalidation;
mod launch;
mod quick_run;
mod sse;
mod support;
mod up;
mod webhooks;

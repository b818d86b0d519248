//! End-to-end tests of the edge: the real `edge` binary on free loopback ports, in front of a scripted
//! origin or the real origin; the encrypted store driven in-process where no HTTP path reaches it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod connections;
mod control;
mod control_origin;
mod failures;
mod memory;
mod process;
mod semantics;
mod store;
mod streams;
mod support;

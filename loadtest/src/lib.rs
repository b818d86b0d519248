//! Starts a local topology on loopback and measures it.
//!
//! * [`launch`] starts and owns processes (`redis-server`, a Redis Cluster, any binary); the
//!   integration tests of the other crates use it too. Whatever it starts is killed on drop.
//! * [`http`] is the HTTP/1.1 load generator.
//! * [`origin`] is the `loadtest origin` measurement; [`ceiling`] measures `redis-benchmark`
//!   for comparison, [`median`] sums up the rounds of each, and [`report`] prints the table and
//!   writes the JSON file.
//! * [`cli`] holds the command-line arguments of the `loadtest` binary.
//!
//! Invariant: all traffic goes to 127.0.0.1.

pub mod ceiling;
pub mod cli;
pub mod http;
pub mod launch;
pub mod median;
pub mod origin;
pub mod report;

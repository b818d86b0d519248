//! Starts a local topology on loopback and measures it.
//!
//! * [`launch`] starts and owns processes (`redis-server`, a Redis Cluster, any binary, a process
//!   tree such as nginx's) and pins them to CPUs; the integration tests of the other crates use it
//!   too. Whatever it starts is killed on drop.
//! * [`http`] is the HTTP/1.1 load generator, closed or open loop.
//! * [`origin_throughput`] is the `loadtest origin` measurement; [`ceiling`] measures `redis-benchmark`
//!   for comparison.
//! * [`edge_hits`] is the `loadtest edge-hits` measurement; [`peers`] configures and starts the caches
//!   it compares the edge with (nginx, Varnish).
//! * [`invalidation`] is the `loadtest invalidation` measurement: how long a write takes to be
//!   applied by every edge over the control plane.
//! * [`webhooks`] is the `loadtest webhooks` measurement: signed deliveries to a receiver in this
//!   process, with a share of its answers failing.
//! * [`measure`] holds what the measurements share, [`median`] sums up their rounds, and
//!   [`report`] prints the tables and writes the JSON files.
//! * [`local`] is `loadtest up`: the origin and an edge on this machine, to try them out;
//!   [`control`] holds the control plane's settings, which it and measurements give the servers.
//! * [`cli`] holds the command-line arguments of the `loadtest` binary.
//!
//! Invariant: all traffic goes to 127.0.0.1.

pub mod ceiling;
pub mod cli;
pub mod control;
pub mod edge_hits;
pub mod http;
pub mod invalidation;
pub mod launch;
pub mod local;
pub mod measure;
pub mod median;
pub mod origin_throughput;
pub mod peers;
pub mod relay;
pub mod report;
pub mod sse;
pub mod webhooks;

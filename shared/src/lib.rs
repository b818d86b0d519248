//! What the origin and the edges both need, and nothing else.
//!
//! * [`domain`]: instruments, timeframes, forecasts and models, checked when they are built.
//! * [`config`]: layered configuration loading (defaults → TOML file → prefixed environment).
//! * [`telemetry`]: the one `tracing` setup.
//! * [`tls`]: control-plane TLS: the development PKI (rcgen), the rustls configurations of origin and
//!   edges (mutual TLS 1.3, ring), and the edge identity carried in a client certificate.
//! * [`wire`]: the control-plane protocol between origin and edges: messages, versioned frames, limits.
//! * [`framed`]: those frames read from and written to a byte stream (a QUIC stream on either side).
//! * [`events`]: analysis events: topics, topic patterns, typed payloads.
//! * [`webhooks`]: Standard Webhooks secrets and signatures.
//! * [`openapi`]: the OpenAPI schemas of values written as text, beside their parsers' rules.
//! * [`time`]: wall-clock instants as unix milliseconds.
//!
//! Invariant: this crate opens no sockets and spawns no tasks.

pub mod config;
pub mod domain;
pub mod events;
pub mod framed;
pub mod openapi;
pub mod process;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod webhooks;
pub mod wire;

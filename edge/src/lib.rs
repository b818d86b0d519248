//! The edge: a Pingora caching proxy that serves readers near them from an encrypted in-memory HTTP
//! cache (RFC 9111) and applies purges.
//!
//! * [`cache`]: keys, policy (freshness, Vary, `Cache-Status`), the encrypted store, purges.
//! * [`crypto`]: AES-256-GCM sealing under a rotating keyring (the cache's data at rest in memory).
//! * [`proxy`]: pingora's request phases wired to the cache.
//! * [`upstream`]: the origins behind the edge and their health.
//! * [`control`]: the QUIC control-plane client (invalidations pushed by the origin) and the
//!   staleness bound the proxy enforces when it is cut off.
//! * [`downstream`]: client connections: the cap on them, header, idle and body timeouts, pipelining.
//! * [`server`]: builds the pingora server from [`config::EdgeConfig`].
//!
//! Purges from outside a request go through [`cache::EncryptedStore::purge`] with a
//! [`cache::Selector`] (exact key, prefix, surrogate tag, everything) and a [`cache::PurgeMode`].
//!
//! Invariant: no plaintext of a cached body or header is held by the cache; it exists only in the
//! buffers of a request being served or a fill being written.

pub mod cache;
pub mod config;
pub mod control;
pub mod crypto;
pub mod downstream;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod upstream;

//! The origin: owns the forecasts and serves them.
//!
//! Entry points: [`server::start`] (what `main` calls and what tests call in-process) and
//! [`api::router`]. A request goes `api` (validation, auth, HTTP caching) → [`forecasts`] (L1 cache,
//! rendering, rollbacks) → [`storage`] (Redis or embedded). Only `storage` talks to Redis or disk.

pub mod api;
pub mod cache;
pub mod config;
pub mod forecasts;
pub mod metrics;
pub mod representation;
pub mod server;
pub mod storage;

//! The origin: owns the forecasts and serves them.
//!
//! Entry points: [`server::start`] (what `main` calls and what tests call in-process) and
//! [`api::router`], served by [`serve::serve`] (connection bound, header deadline). A request goes `api` (validation, auth, HTTP caching) → [`forecasts`] (L1 cache,
//! rendering, rollbacks) → [`storage`] (Redis or embedded). Only `storage` talks to Redis or disk.
//! Every change of a forecast, and every `POST /admin/v1/invalidations`, appends to the durable
//! invalidation log ([`invalidation`] holds its rules) before it is answered. Analysis events go to the
//! durable event log, and from it to SSE streams ([`events`]) and signed webhooks ([`webhooks`]).

pub mod api;
pub mod cache;
pub mod config;
pub mod control;
pub mod events;
pub mod forecasts;
pub mod invalidation;
pub mod metrics;
pub mod representation;
pub mod serve;
pub mod server;
pub mod storage;
pub mod warming;
pub mod webhooks;

//! The origin: owns the forecasts and serves them.
//!
//! Entry points: [`server::start`] (what `main` calls and what tests call in-process) and
//! [`api::router`], served by [`serve::serve`] (connection bound, header deadline).
//!
//! Layers. [`api`] is the HTTP layer: it parses, authorizes, calls the domain and renders answers. The
//! domain below it ([`forecasts`] with its L1 cache, rollbacks and change pipeline; [`reads`], what a
//! read names and its representation; [`invalidation`]; [`warming`]; [`events`]; [`webhooks`];
//! [`control`], the QUIC server of the edges) never imports the HTTP layer: each part is given the
//! narrow handles it works with (`Arc<Forecasts>`, `Edges`, `Metrics`, …), built once in [`server`].
//! Only [`storage`] talks to Redis or disk. Every background task (followers, the webhook dispatcher and
//! its attempts, control-plane connections, warming pushes) is spawned into [`tasks::Tasks`];
//! [`server::Running::shutdown`] stops them all and returns once they have ended.
//!
//! Invariants. Every change of a forecast, and every `POST /admin/v1/invalidations`, appends to the
//! durable invalidation log ([`invalidation`] holds its rules) before it is answered; a change is
//! acknowledged only once its version, its invalidation and its event are durable. Analysis events go
//! to the durable event log, and from it to SSE streams ([`events`]) and signed webhooks ([`webhooks`]).

pub mod api;
pub mod cache;
pub mod config;
pub mod control;
pub mod events;
pub mod forecasts;
pub mod invalidation;
pub mod metrics;
pub mod reads;
pub mod representation;
pub mod serve;
pub mod server;
pub mod storage;
pub mod tasks;
pub mod warming;
pub mod webhooks;

//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use serde::Serialize;
use shared::domain::{ConfidenceInterval, Forecast, ModelRef};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The JSON of one forecast version as the read API serves it: the stored forecast's fields plus these.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ForecastDocument {
    #[schema(example = "AAPL")]
    instrument: String,
    #[schema(example = "1h")]
    timeframe: String,
    #[schema(example = 3)]
    version: u64,
    /// When this version was stored.
    #[schema(format = DateTime)]
    updated_at: String,
    /// Set when a rollback made this version.
    rollback_of: Option<u64>,
    #[serde(flatten)]
    forecast: Forecast,
}

/// Several forecasts in one answer.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ForecastList {
    forecasts: Vec<ForecastDocument>,
    /// Keys asked for that have no current version.
    #[schema(example = json!(["MSFT:1d"]))]
    missing: Vec<String>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Forecast origin", description = "Forecasts per (instrument, timeframe) with versions, rollback and caching headers, and the invalidation log edges apply."),
    modifiers(&BearerAuth),
    paths(
        super::read::current,
        super::read::version,
        super::read::instrument_forecasts,
        super::read::batch,
        super::admin::put_forecast,
        super::admin::batch_write,
        super::admin::delete_forecast,
        super::admin::versions,
        super::admin::rollback,
        super::admin::model_forecasts,
        super::admin::model_rollback,
        super::admin::audit,
        super::invalidations::create,
        super::invalidations::list,
        super::invalidations::show,
        super::invalidations::edges,
        super::invalidations::warm,
        super::events::publish,
        super::events::publish_batch,
        super::events::stream,
        super::events::subscribers,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::show,
        super::webhooks::update,
        super::webhooks::delete,
        super::webhooks::rotate_secret,
        super::webhooks::stats,
        super::webhooks::deliveries,
        super::webhooks::dead_letters,
        super::webhooks::redrive,
        super::webhooks::resend,
        super::webhooks::replay,
        super::tokens::create,
        super::tokens::list,
        super::tokens::revoke,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::ops::openapi,
    ),
    components(schemas(Forecast, ModelRef, ConfidenceInterval, ForecastDocument, ForecastList))
)]
pub struct ApiDoc;

//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use serde::Serialize;
use shared::domain::{ConfidenceInterval, Forecast, Instrument, ModelRef, Timeframe};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The schema of what the API answers with the fields of a request type `T`: `T`'s schema without its
/// ban on other fields (`deny_unknown_fields` becomes `additionalProperties: false`), since an answer
/// carries more than was sent. Requests keep the strict schema; answers are described by these.
macro_rules! read_view {
    ($($(#[$doc:meta])* $view:ident => $write:ty;)*) => {$(
        $(#[$doc])*
        pub struct $view;

        impl utoipa::PartialSchema for $view {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let mut schema = <$write as utoipa::PartialSchema>::schema();
                if let utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(object)) = &mut schema {
                    object.additional_properties = None;
                }
                schema
            }
        }

        impl ToSchema for $view {}
    )*};
}

read_view! {
    /// A forecast's fields as answers carry them.
    ForecastFields => Forecast;
    /// An invalidation's selectors as answers carry them.
    InvalidationFields => crate::invalidation::InvalidationBody;
}

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
    #[schema(value_type = ForecastFields)]
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
    components(schemas(
        Instrument,
        Timeframe,
        Forecast,
        ForecastFields,
        InvalidationFields,
        ModelRef,
        ConfidenceInterval,
        ForecastDocument,
        ForecastList
    ))
)]
pub struct ApiDoc;

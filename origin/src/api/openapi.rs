//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use serde::Serialize;
use shared::domain::{ConfidenceInterval, Forecast, ForecastKey, Instrument, ModelRef, Timeframe};
use shared::events::Publish;
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

/// An event type's name, as streams and webhook endpoints filter by it.
pub struct EventTypeName;

impl utoipa::PartialSchema for EventTypeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        shared::openapi::text(shared::openapi::EVENT_TYPE_PATTERN, shared::events::MAX_TYPE_BYTES)
            .examples(["PatternDetected"])
            .into()
    }
}

impl ToSchema for EventTypeName {}

/// An instant as the API takes one: RFC 3339, or unix milliseconds (1 to 16 digits).
pub struct Instant;

impl utoipa::PartialSchema for Instant {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let rfc3339 = utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )));
        let millis = shared::openapi::text("^[0-9]{1,16}$", 16);
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(rfc3339)
            .item(millis)
            .examples(["2026-11-23T14:00:00Z"])
            .into()
    }
}

impl ToSchema for Instant {}

/// One Server-Sent Event of `GET /v1/stream`, as an EventSource reads it.
pub struct StreamEvent;

impl utoipa::PartialSchema for StreamEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::ObjectBuilder;
        use utoipa::openapi::schema::Type;
        let text = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        let kind = shared::openapi::text(shared::openapi::EVENT_TYPE_PATTERN, shared::events::MAX_TYPE_BYTES).description(Some(
            "The event's type; `gap`: what was asked for is no longer in the log (`data`: `from`, `to`, `reason`); \
             `overflow`: this reader fell behind and the stream ends (`data`: `last_event_id` to resume from, `reason`)",
        ));
        let data = text(
            "JSON: the event's envelope (`topic`, `type`, `instrument`, `timeframe`, `produced_at`, \
             `schema_version`, `payload`), or a gap or overflow notice",
        )
        .content_media_type("application/json");
        let id = text("The event's place in the log: send it back as `Last-Event-ID` to resume after it")
            .pattern(Some("^[0-9]+$"));
        let retry = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .description(Some("Milliseconds an EventSource waits before reconnecting"));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("event", kind)
            .property("data", data)
            .property("id", id)
            .property("retry", retry)
            .required("event")
            .required("data")
            .into()
    }
}

impl ToSchema for StreamEvent {}

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
        ForecastKey,
        Publish,
        shared::events::Topic,
        shared::events::TopicPattern,
        EventTypeName,
        Instant,
        StreamEvent,
        super::auth::Scope,
        super::admin::BatchWrite,
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

/// The document as this origin serves it: the batch limits its configuration sets are written into the
/// schemas they bound.
pub fn document(limits: &super::Limits, max_events: usize) -> serde_json::Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let mut bound = |pointer: &str, max_items: usize| {
        if let Some(serde_json::Value::Object(schema)) = document.pointer_mut(pointer) {
            schema.insert("maxItems".to_owned(), max_items.into());
        }
    };
    bound(
        "/components/schemas/BatchWriteRequest/properties/writes",
        limits.max_batch_writes,
    );
    bound("/components/schemas/PublishBatch/properties/events", max_events);
    if let Some(serde_json::Value::Array(parameters)) = document.pointer_mut("/paths/~1v1~1forecasts/get/parameters")
        && let Some(keys) = parameters.iter_mut().find(|parameter| parameter["name"] == "keys")
        && let Some(serde_json::Value::Object(schema)) = keys.get_mut("schema")
    {
        schema.insert("maxItems".to_owned(), limits.max_batch_reads.into());
    }
    document
}

/// The pattern the document gives parameter `name` of `method path`, compiled.
#[cfg(test)]
pub fn parameter_pattern(path: &str, method: &str, name: &str) -> regex::Regex {
    let document = document(&super::Limits::for_tests(), 1);
    let parameters = document["paths"][path][method]["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let parameter = parameters
        .iter()
        .find(|p| p["name"] == name)
        .expect("the parameter is documented");
    regex::Regex::new(parameter["schema"]["pattern"].as_str().expect("it has a pattern")).expect("the pattern compiles")
}

"""The README's admin examples, walked with a Python client generated from the origin's /openapi.json
(openapi-python-client), by origin/tests/it/generated_client.rs.

Usage: generated_client_walk.py BASE_URL TOKEN PACKAGE_DIR

Only the generated package is used to talk to the origin: its `api` modules send the requests and its
`models` parse the answers, and every check is made on the parsed models. So an answer the document
does not describe (a missing or renamed field, an undocumented status, a field the server sends that
the document does not name) fails the walk. Exits 0 when every step matched, 1 with the step and the
mismatch otherwise.
"""

import datetime
import importlib.util
import pathlib
import sys
import traceback

import attrs

# The generated package is imported under this name, wherever it was generated and whatever the
# document's title made of its folder name.
PACKAGE = "forecast_client"
INSTRUMENT = "AAPL"
TIMEFRAME = "1h"
WEBHOOK_URL = "https://[100::1]/hook"


class Mismatch(Exception):
    """An answer that is not what the README says, or that the generated client could not parse."""


# The step under way, named in the report of a failure that is not a mismatch (an exception of the
# generated client, such as a required field missing from an answer).
current_step = "loading the generated client"


def begin(step):
    global current_step
    current_step = step
    return step


def load_generated_package(directory):
    init = pathlib.Path(directory) / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        PACKAGE, init, submodule_search_locations=[str(init.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)


def check(condition, message):
    if not condition:
        raise Mismatch(message)


def check_equal(actual, expected, what):
    check(actual == expected, f"{what}: expected {expected!r}, got {actual!r}")


def parsed(response, status, what):
    """The parsed model of an answer that must have `status`; a status or body the document does not
    describe is a mismatch."""
    check(
        int(response.status_code) == status,
        f"{what}: expected status {status}, got {int(response.status_code)}: {response.content[:500]!r}",
    )
    check(
        response.parsed is not None,
        f"{what}: the generated client did not parse the answer: {response.content[:500]!r}",
    )
    undocumented = list(undocumented_fields(response.parsed, type(response.parsed).__name__))
    check(
        not undocumented,
        f"{what}: the server sent fields the document does not name: {', '.join(undocumented)}",
    )
    return response.parsed


def undocumented_fields(value, path):
    """Fields of a parsed model that landed in `additional_properties` although the model names its
    fields. Free-form maps (quantiles, metadata, headers) name none, so everything in them is expected."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from undocumented_fields(item, f"{path}[{index}]")
        return
    if not attrs.has(type(value)):
        return
    named = [field.name for field in attrs.fields(type(value)) if field.name != "additional_properties"]
    extra = getattr(value, "additional_properties", {})
    if named:
        for key in extra:
            yield f"{path}.{key}"
    for name in named:
        yield from undocumented_fields(getattr(value, name), f"{path}.{name}")


def walk(base_url, token):
    begin("importing the generated api modules and models")
    from forecast_client import AuthenticatedClient
    from forecast_client.api.admin import (
        create_invalidation,
        put_forecast,
        rollback,
        show_invalidation,
        versions,
    )
    from forecast_client.api.read import current
    from forecast_client.api.webhooks import create_webhook, show_webhook
    from forecast_client.models import (
        ConfidenceInterval,
        Forecast,
        ForecastMetadata,
        ForecastQuantiles,
        InvalidationBody,
        ModelRef,
        NewEndpoint,
        RollbackRequest,
        Timeframe,
    )
    from forecast_client.types import UNSET

    client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)
    timeframe = Timeframe(TIMEFRAME)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)

    def forecast(model_version, point):
        return Forecast(
            horizon="1h",
            generated_at=now,
            valid_until=now + datetime.timedelta(hours=1),
            model=ModelRef(id="lstm", version=model_version),
            point=point,
            quantiles=ForecastQuantiles.from_dict({"0.05": point - 6.0, "0.5": point, "0.95": point + 6.0}),
            direction_prob_up=0.61,
            intervals=[ConfidenceInterval(level=0.9, lower=point - 5.0, upper=point + 5.0)],
            metadata=ForecastMetadata.from_dict({"features": "ohlcv"}),
        )

    def check_content(document, written, what):
        check_equal(document.instrument, INSTRUMENT, f"{what}: instrument")
        check_equal(document.timeframe, TIMEFRAME, f"{what}: timeframe")
        check_equal(document.point, written.point, f"{what}: point")
        check_equal(document.horizon, written.horizon, f"{what}: horizon")
        check_equal(document.model.id, written.model.id, f"{what}: model.id")
        check_equal(document.model.version, written.model.version, f"{what}: model.version")
        check_equal(document.generated_at, written.generated_at, f"{what}: generated_at")
        check_equal(document.valid_until, written.valid_until, f"{what}: valid_until")
        check_equal(document.direction_prob_up, written.direction_prob_up, f"{what}: direction_prob_up")
        check_equal(document.quantiles.to_dict(), written.quantiles.to_dict(), f"{what}: quantiles")
        check_equal(
            [interval.to_dict() for interval in document.intervals],
            [interval.to_dict() for interval in written.intervals],
            f"{what}: intervals",
        )
        check_equal(document.metadata.to_dict(), written.metadata.to_dict(), f"{what}: metadata")
        check(
            isinstance(document.updated_at, datetime.datetime),
            f"{what}: updated_at is not a time: {document.updated_at!r}",
        )

    step = begin(f"PUT /admin/v1/forecasts/{INSTRUMENT}/{TIMEFRAME} (version 1)")
    first = forecast("3.2.0", 187.42)
    written = parsed(put_forecast.sync_detailed(INSTRUMENT, timeframe, client=client, body=first), 201, step)
    check_equal(written.version, 1, f"{step}: version")
    check_content(written, first, step)
    print(f"ok  {step}: version {written.version}")

    step = begin(f"GET /v1/forecasts/{INSTRUMENT}/{TIMEFRAME}")
    read = parsed(current.sync_detailed(INSTRUMENT, timeframe, client=client), 200, step)
    check_equal(read.version, 1, f"{step}: version")
    check(read.rollback_of in (None, UNSET), f"{step}: rollback_of is {read.rollback_of!r}")
    check_content(read, first, step)
    print(f"ok  {step}: version {read.version}, point {read.point}")

    step = begin(f"GET /admin/v1/forecasts/{INSTRUMENT}/{TIMEFRAME}/versions (after one write)")
    history = parsed(versions.sync_detailed(INSTRUMENT, timeframe, client=client), 200, step)
    check_equal(history.instrument, INSTRUMENT, f"{step}: instrument")
    check_equal(history.timeframe, TIMEFRAME, f"{step}: timeframe")
    check_equal(history.current, 1, f"{step}: current")
    check_equal(history.latest, 1, f"{step}: latest")
    check_equal([summary.version for summary in history.versions], [1], f"{step}: versions")
    summary = history.versions[0]
    check_equal((summary.model.id, summary.model.version), ("lstm", "3.2.0"), f"{step}: versions[0].model")
    check(summary.etag.startswith('"1-'), f"{step}: versions[0].etag is {summary.etag!r}")
    check(
        isinstance(summary.created_at, datetime.datetime),
        f"{step}: versions[0].created_at is not a time: {summary.created_at!r}",
    )
    print(f"ok  {step}: {[summary.version for summary in history.versions]}")

    step = begin(f"PUT /admin/v1/forecasts/{INSTRUMENT}/{TIMEFRAME} (version 2)")
    second = forecast("3.3.0", 190.5)
    written = parsed(put_forecast.sync_detailed(INSTRUMENT, timeframe, client=client, body=second), 200, step)
    check_equal(written.version, 2, f"{step}: version")
    check_content(written, second, step)
    print(f"ok  {step}: version {written.version}")

    step = begin(f"POST /admin/v1/forecasts/{INSTRUMENT}/{TIMEFRAME}/rollback to_version 1")
    rolled_back = parsed(
        rollback.sync_detailed(INSTRUMENT, timeframe, client=client, body=RollbackRequest(to_version=1)),
        200,
        step,
    )
    check_equal(rolled_back.version, 3, f"{step}: version")
    check_equal(rolled_back.rollback_of, 1, f"{step}: rollback_of")
    check_content(rolled_back, first, step)
    print(f"ok  {step}: version {rolled_back.version}, rollback_of {rolled_back.rollback_of}")

    step = begin(f"GET /v1/forecasts/{INSTRUMENT}/{TIMEFRAME} (after the rollback)")
    read = parsed(current.sync_detailed(INSTRUMENT, timeframe, client=client), 200, step)
    check_equal(read.version, 3, f"{step}: version")
    check_equal(read.rollback_of, 1, f"{step}: rollback_of")
    check_content(read, first, step)
    print(f"ok  {step}: version {read.version} has version 1's content (point {read.point})")

    step = begin(f"GET /admin/v1/forecasts/{INSTRUMENT}/{TIMEFRAME}/versions (after the rollback)")
    history = parsed(versions.sync_detailed(INSTRUMENT, timeframe, client=client), 200, step)
    check_equal(history.current, 3, f"{step}: current")
    check_equal(history.latest, 3, f"{step}: latest")
    check_equal([summary.version for summary in history.versions], [3, 2, 1], f"{step}: versions")
    check_equal(history.versions[0].rollback_of, 1, f"{step}: versions[0].rollback_of")
    check_equal(history.versions[1].model.version, "3.3.0", f"{step}: versions[1].model.version")
    print(f"ok  {step}: {[summary.version for summary in history.versions]}")

    step = begin("POST /admin/v1/invalidations")
    key = f"/v1/forecasts/{INSTRUMENT}/{TIMEFRAME}"
    accepted = parsed(
        create_invalidation.sync_detailed(client=client, body=InvalidationBody(keys=[key])),
        202,
        step,
    )
    check(isinstance(accepted.id, int) and accepted.id > 0, f"{step}: id is {accepted.id!r}")
    check_equal(accepted.seq, accepted.id, f"{step}: seq")
    check_equal(accepted.selectors, 1, f"{step}: selectors")
    check(
        accepted.propagation in (None, UNSET),
        f"{step}: propagation without ?wait is {accepted.propagation!r}",
    )
    print(f"ok  {step}: id {accepted.id}")

    step = begin(f"GET /admin/v1/invalidations/{accepted.id}")
    status = parsed(show_invalidation.sync_detailed(accepted.id, client=client), 200, step)
    check_equal(status.id, accepted.id, f"{step}: id")
    check_equal(status.sequence, accepted.id, f"{step}: sequence")
    check_equal(status.keys, [key], f"{step}: keys")
    for selector in ("prefixes", "tags", "models"):
        check(not getattr(status, selector), f"{step}: {selector} is {getattr(status, selector)!r}")
    check(not status.all_, f"{step}: all is {status.all_!r}")
    check(not status.soft, f"{step}: soft is {status.soft!r}")
    check(
        isinstance(status.issued_at, datetime.datetime),
        f"{step}: issued_at is not a time: {status.issued_at!r}",
    )
    # No edge is connected to the test origin: nothing is pending, so it is complete.
    check_equal(status.pending, [], f"{step}: pending")
    check_equal(status.applied, [], f"{step}: applied")
    check_equal(status.complete, True, f"{step}: complete")
    print(f"ok  {step}: keys {status.keys}, complete {status.complete}")

    step = begin("POST /admin/v1/webhooks")
    created = parsed(
        create_webhook.sync_detailed(
            client=client,
            body=NewEndpoint(
                url=WEBHOOK_URL,
                topics=["forecasts.**"],
                enabled=False,
                description="generated client walk",
            ),
        ),
        201,
        step,
    )
    check(isinstance(created.id, str) and created.id, f"{step}: id is {created.id!r}")
    check_equal(created.url, WEBHOOK_URL, f"{step}: url")
    check_equal(created.enabled, False, f"{step}: enabled")
    check_equal(created.topics, ["forecasts.**"], f"{step}: topics")
    check_equal(created.description, "generated client walk", f"{step}: description")
    check(created.secret.startswith("whsec_"), f"{step}: secret is {created.secret!r}")
    print(f"ok  {step}: id {created.id}, enabled {created.enabled}")

    step = begin(f"GET /admin/v1/webhooks/{created.id}")
    shown = parsed(show_webhook.sync_detailed(created.id, client=client), 200, step)
    check_equal(shown.id, created.id, f"{step}: id")
    check_equal(shown.url, WEBHOOK_URL, f"{step}: url")
    check_equal(shown.enabled, False, f"{step}: enabled")
    check_equal(shown.topics, ["forecasts.**"], f"{step}: topics")
    print(f"ok  {step}: url {shown.url}")


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    base_url, token, package_dir = sys.argv[1:]
    try:
        load_generated_package(package_dir)
        walk(base_url, token)
    except Mismatch as mismatch:
        print(f"MISMATCH {mismatch}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - whatever the generated client raises is reported with its step
        print(f"FAILED during {current_step}:", file=sys.stderr)
        traceback.print_exc()
        return 1
    print("the generated client walked every example")
    return 0


if __name__ == "__main__":
    sys.exit(main())

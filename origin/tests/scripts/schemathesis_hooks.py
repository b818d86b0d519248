"""Hooks of the origin's schemathesis campaign (`origin/tests/it/fuzz.rs` runs it; PyPI `schemathesis` 4).

* The fuzzer reaches 127.0.0.1 only: a request for any other host is refused before it is sent.
* Webhook endpoints it registers are never delivered to, and registering them resolves no name: every
  create and change is sent with `"enabled": false` (the origin dead-letters what a disabled endpoint
  would get, without connecting), and an `https` URL's host name is replaced by an address literal,
  which the origin checks without DNS. The rest of the URL (scheme, user, port, path) stays as generated.
* Every 5xx answer and every request that got no answer in time (a hang) is written to the file named by
  `$FUZZ_FINDINGS`, one JSON object a line, with the request that reproduces it.
"""

import ipaddress
import json
import os
import re
import shlex
import threading
import urllib.parse

import schemathesis

# An address in the discard-only prefix of RFC 6666, where nothing answers. The origin's target policy
# refuses that prefix unless allow-listed; the campaign's origin allow-lists exactly it, so registration
# succeeds and the stateful phase gets endpoints to work on.
STAND_IN_HOST = "[100::1]"
WEBHOOK_BODIES = {("POST", "/admin/v1/webhooks"), ("PATCH", "/admin/v1/webhooks/{id}")}
LOOPBACK = "127.0.0.1"

_findings_lock = threading.Lock()


def _record(finding):
    path = os.environ.get("FUZZ_FINDINGS")
    if not path:
        return
    with _findings_lock, open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(finding, default=str) + "\n")


def _is_address_literal(host):
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        return False
    return True


def without_host_name(url):
    """`url` with its host replaced by an address literal when the origin would resolve it.

    The origin parses URLs as WHATWG does and resolves the host only of an `https` URL (plain `http` is
    refused first), so only those are rewritten. The scheme is found as WHATWG finds it: after dropping
    tabs and newlines and trimming control characters and spaces.
    """
    if not isinstance(url, str):
        return url
    text = re.sub(r"[\t\n\r]", "", url).strip("".join(map(chr, range(0x21))))
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() != "https":
        return url
    rest = rest.lstrip("/\\")
    authority = re.split(r"[/\\?#]", rest, maxsplit=1)[0]
    remainder = rest[len(authority) :]
    userinfo, at, host_port = authority.rpartition("@")
    port_match = re.search(r":(\d*)$", host_port)
    host = host_port[: port_match.start()] if port_match else host_port
    if _is_address_literal(host):
        return url
    port = port_match.group(0) if port_match else ""
    return f"https://{userinfo}{at}{STAND_IN_HOST}{port}{remainder}"


METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _body_properties(raw_schema, operation):
    """The top-level property names of an operation's JSON request body (local `$ref`s followed)."""

    def resolve(schema, depth=0):
        if not isinstance(schema, dict) or depth > 8:
            return {}
        reference = schema.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/"):
            target = raw_schema
            for part in reference[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            return resolve(target, depth + 1)
        return schema

    names = set()
    for media in ((operation.get("requestBody") or {}).get("content") or {}).values():
        schema = resolve((media or {}).get("schema"))
        for part in [schema] + [resolve(s) for key in ("allOf", "oneOf", "anyOf") for s in schema.get(key, [])]:
            names |= set((part.get("properties") or {}).keys())
    return names


def _check_webhook_bodies(raw_schema):
    """Fails the run unless the operations that take a target URL are exactly those rewritten above."""
    taking = set()
    for path, item in (raw_schema.get("paths") or {}).items():
        for method, operation in item.items():
            if method in METHODS and isinstance(operation, dict):
                if {"url", "enabled"} & _body_properties(raw_schema, operation):
                    taking.add((method.upper(), path))
    if taking != WEBHOOK_BODIES:
        raise RuntimeError(
            f"the operations that take a webhook url or enabled flag are {sorted(taking)}, the hooks keep "
            f"{sorted(WEBHOOK_BODIES)} off the network: update WEBHOOK_BODIES in {__file__}"
        )


@schemathesis.hook
def before_load_schema(context, raw_schema):
    _check_webhook_bodies(raw_schema)


def _operation(case):
    return f"{case.operation.method.upper()} {case.operation.path}"


@schemathesis.hook
def before_call(context, case, kwargs):
    url = case.as_transport_kwargs().get("url", "")
    host = urllib.parse.urlsplit(url).hostname
    if host != LOOPBACK:
        _record({"kind": "request off loopback, refused", "operation": _operation(case), "request": {"url": url}})
        raise RuntimeError(f"refusing to send a request off loopback: {url}")
    if (case.operation.method.upper(), case.operation.path) in WEBHOOK_BODIES and isinstance(case.body, dict):
        body = dict(case.body)
        body["enabled"] = False
        if "url" in body:
            body["url"] = without_host_name(body["url"])
        case.body = body


def _request_of(request):
    """The request as sent, with a curl command that sends it again."""
    body = request.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "backslashreplace")
    headers = dict(request.headers)
    curl = ["curl", "-sS", "-X", request.method, request.url]
    for name, value in headers.items():
        if name.lower() not in ("content-length", "accept-encoding", "connection", "user-agent"):
            curl += ["-H", f"{name}: {value}"]
    if body is not None:
        curl += ["--data-binary", body]
    return {
        "method": request.method,
        "url": request.url,
        "headers": headers,
        "body": body,
        "curl": " ".join(shlex.quote(part) for part in curl),
    }


@schemathesis.hook
def after_call(context, case, response):
    if response.status_code < 500:
        return
    request = response.request
    _record(
        {
            "kind": "server error",
            "operation": _operation(case),
            "request": _request_of(request),
            "response": {
                "status": response.status_code,
                "headers": dict(response.headers),
                "body": (response.text or "")[:2000],
            },
        }
    )


@schemathesis.hook
def after_network_error(context, case, request):
    _record(
        {
            "kind": "no answer (timeout or connection failure)",
            "operation": _operation(case),
            "request": _request_of(request),
        }
    )

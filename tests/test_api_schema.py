"""Schemathesis against a live daemon: requests generated from ``/v1/openapi.json`` (valid
and invalid ones) must never get a 5xx, and every answer must match the document.

Every check runs but one: "schema-valid data is accepted". The document describes the shape
of an operation; whether ``route.api`` names a declared entity type, or ``"abc"`` fits the
field's type, is the project schema's to say, and a 422 is then the right answer."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from test_daemon import daemon, key, make_project


@pytest.fixture(scope="module")
def live_api(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("schemathesis"))
    with daemon(project) as (url, _):
        yield url


def test_api_never_fails_and_keeps_its_promises(live_api):
    schema = schemathesis.openapi.from_url(f"{live_api}/v1/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/v1/watch":
            continue  # the stream runs until told to stop: tests/test_daemon.py drives it

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(base_url=live_api, headers=key("zara"), timeout=30,
                                   excluded_checks=[positive_data_acceptance])
        check()
        checked.append(f"{operation.method.upper()} {operation.path}")
    # every operation but the watch stream and the document itself (schemathesis skips it)
    assert len(checked) == 15, checked

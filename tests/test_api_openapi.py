"""The OpenAPI document describes every route, and schemathesis fuzzes the
live API through it: no input, valid or not, gets a 5xx."""

from __future__ import annotations

import asyncio

import aiohttp
import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from api_util import serving
from conftest import api_url, make_config, timeout
from hypothesis import HealthCheck, Phase

from bridge.api.openapi import document

BEARER = {"Authorization": "Bearer your-access-key"}
EXAMPLES = 8  # per operation and mode: the whole run stays well under a minute


async def test_document_is_served_and_lists_every_route(tmp_path):
    async with serving(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        async with http.get(api_url(daemon, "/api/v1/openapi.json")) as resp:
            assert resp.status == 200
            doc = await resp.json()
        assert doc["openapi"].startswith("3.1")
        documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        app = daemon.api.app()
        served = set()
        for route in app.router.routes():
            info = route.resource.get_info()
            path = info.get("path") or info.get("formatter")
            if route.method != "HEAD":
                served.add((route.method, path))
        aliases = {"/api/v1/sendSms", "/api/sendsms", "/api/clicTocall"}
        missing = {(m, p) for m, p in served if p not in aliases} - documented
        assert not missing, f"routes missing from the OpenAPI document: {sorted(missing)}"
        assert documented - served == set()


def _fuzz(base_url: str) -> list[str]:
    schema = schemathesis.openapi.from_dict(document(base_url))
    problems: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                                 phases=[Phase.explicit, Phase.generate],
                                 suppress_health_check=list(HealthCheck))
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def call(case: schemathesis.Case) -> None:
                headers = dict(case.headers or {})
                headers.setdefault("Authorization", BEARER["Authorization"])
                case.headers = headers
                response = case.call(base_url=base_url, allow_redirects=False, timeout=timeout(10))
                if response.status_code >= 500:
                    problems.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                    f"{response.text[:200]}")
            try:
                call()
            except hypothesis.errors.Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE  # nothing there to get wrong
    return problems


@pytest.mark.timeout(120)  # scaled with the factor (conftest.py)
async def test_schemathesis_finds_no_server_error(tmp_path):
    async with serving(make_config(tmp_path)) as daemon:
        base = f"http://127.0.0.1:{daemon.api_port}"
        problems = await asyncio.to_thread(_fuzz, base)
    assert not problems, "\n".join(problems[:20])

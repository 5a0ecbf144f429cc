"""The older Ardary form of inSIM's API (seeds 001/003): the same sendsms,
reached at ``/api/sendSms`` or with the ``header`` sent as a one-element list
(read by :func:`bridge.api.bodies.insim_header`), answered in its own shape:
``{"data": [...]}`` with each result's number also as ``phonenumber``, and
``count_sent`` when some of the batch failed."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.api.envelope import json_response

SEND_PATHS = ("/api/sendSms", "/api/sendsms")
# The official SDKs (npm ``insim``, composer ``soloapi/apisolo``) post here; they
# are answered in inSIM's shape (their READMEs show a plain list).
SDK_SEND_PATH = "/api/sendSmsSolo"
SDK_CONTACT_PATH = "/api/addcontactSolo"


def send_answer(results: list[dict[str, Any]], status: int = 200) -> web.Response:
    for r in results:
        r["phonenumber"] = r["phone_number"]
    body: dict[str, Any] = {"data": results}
    failed = sum(1 for r in results if not r["sent"])
    if failed:
        body["count_sent"] = len(results) - failed
    return json_response(body, status=status)

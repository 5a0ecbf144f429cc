"""The accept path's fast paths give exactly what the slow ones gave: ids,
the lone-surrogate check of JSON bodies, E.164 numbers judged from
phonenumbers' metadata without building a PhoneNumber, records built by
``quick_init``, and one-part texts counted without ``segment_count``; and an
agent begins a priority-2 job before the campaign it already holds."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
import pickle
import random

import aiohttp
import phonenumbers
import pytest
from api_util import serving
from conftest import api_url, make_config, wait_until

from bridge.api.bodies import parse_json, parse_json_slowly
from bridge.api.errors import ApiError
from bridge.api.judging import Rules, forbidden_matcher, judge_message, sms_job
from bridge.core import numbers
from bridge.core.records import maker, quick_init
from bridge.store import model
from bridge.store.model import (
    ID_ALPHABET,
    Enqueued,
    Job,
    NewJob,
    new_id_sms_api,
    new_id_sms_apis,
    random_text,
    random_texts,
)
from device_agents import protocol as p
from device_agents.journal import Journal
from device_agents.modem import gsm7
from device_agents.runtime import AgentRuntime


def test_ids_are_15_characters_of_the_alphabet_distinct_and_in_the_order_made():
    ids = [new_id_sms_api() for _ in range(2000)] + new_id_sms_apis(2000)
    assert all(len(i) == 15 and set(i) <= set(ID_ALPHABET) for i in ids)
    assert len(set(ids)) == len(ids)
    # Made one after the other, they sort one after the other by their time (the first 7
    # characters), in byte order as SQLite's index compares them.
    heads = [i[:7] for i in ids]
    assert heads == sorted(heads)
    assert model._time_prefix(0) == "0000000" and model._time_prefix(62 ** 7 - 1) == "zzzzzzz"
    assert model._time_prefix(1_796_000_000_000) < model._time_prefix(1_796_000_000_001)


def test_ids_of_one_call_are_distinct_even_when_the_random_source_repeats(monkeypatch):
    real = model.random_texts
    calls = []

    def repeating(count: int, length: int) -> list[str]:
        calls.append(count)
        return ["abcdefgh"] * count if len(calls) == 1 else real(count, length)
    monkeypatch.setattr(model, "random_texts", repeating)
    ids = new_id_sms_apis(50)
    assert len(set(ids)) == 50 and all(len(i) == 15 for i in ids)


def test_random_texts_use_every_character_of_the_alphabet_evenly():
    ids = random_texts(4000, 15)
    assert all(len(i) == 15 and set(i) <= set(ID_ALPHABET) for i in ids)
    counts = collections.Counter("".join(ids))
    # 60,000 characters over 62: about 968 each; a biased mapping (byte % 62)
    # would give the first 8 characters ~1,100.
    assert set(counts) == set(ID_ALPHABET)
    assert max(counts.values()) < 1100 and min(counts.values()) > 840


def test_random_text_of_any_length():
    assert random_text(0) == ""
    assert len(random_text(300)) == 300


def _slow(text: str) -> str | None:
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def test_fast_e164_agrees_with_phonenumbers_on_random_and_example_numbers():
    rng = random.Random(7)
    codes = list(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    texts = ["+" + str(rng.choice(codes)) + "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 14)))
             for _ in range(30000)]
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in range(11):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                texts.append(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    decided = 0
    for text in texts:
        fast = numbers.fast_e164(text)
        if fast is not None:
            decided += 1
            assert fast == _slow(text), text
        # Whatever the fast path says, normalise answers as phonenumbers does.
        try:
            assert numbers.normalise(text) == _slow(text), text
        except ValueError:
            assert _slow(text) is None, text
    assert decided > 1000  # the fast path is taken, not always declined


@pytest.mark.parametrize("text", ["+33 6 12 34 56 78", "+330612345678", "0033612345678", "+1 212 555 0123",
                                  "+79161234567", "+12125550123"])
def test_other_forms_still_go_through_phonenumbers(text):
    assert numbers.normalise(text) == _slow(text.replace("00", "+", 1) if text.startswith("00") else text)


def test_time_zone_is_the_numbers_only_zone():
    assert numbers.time_zone("+33612345678") == "Europe/Paris"
    assert numbers.time_zone("+12125550123") == "America/New_York"
    assert numbers.time_zone("+79161234567") is None  # Russia spans eleven zones: the number does not say


@pytest.mark.parametrize(("body", "status"), [
    (b'{"header": {"login": "user@email.com", "accessKey": "your-access-key"}, "messages": [], '
     b'"x": "\\ud800"}', 400),  # a lone surrogate escaped in JSON
    (b'{"header": {"login": "user@email.com", "accessKey": "your-access-key"}, "messages": [], '
     b'"\\udfff": 1}', 400),  # in a key
    (b'{"header": {"login": "user@email.com", "accessKey": "your-access-key"}, "messages": [], '
     b'"x": "\xed\xa0\x80"}', 400),  # encoded in the bytes themselves
    (b'{"header": {"login": "user@email.com", "accessKey": "your-access-key"}, "messages": [], '
     b'"x": "\\ud83d\\ude00 \\u00e9"}', 200),  # a pair is text
])
async def test_bodies_with_lone_surrogates_are_refused(tmp_path, body, status):
    async with serving(make_config(tmp_path, devices=[])) as daemon, aiohttp.ClientSession() as http, \
            http.post(api_url(daemon, "/api/v1/sendsms"), data=body,
                      headers={"Content-Type": "application/json"}) as resp:
        answer = await resp.text()
        assert resp.status == status, answer
        if status == 400:
            assert "not valid Unicode" in answer


HEAD = '{"header": {"login": "user@email.com", "accessKey": "your-access-key"}, '


@pytest.mark.parametrize(("body", "status", "said"), [
    # an integer past 64 bits: read exactly
    ((HEAD + '"messages": [{"phone_number": "+33612345678", "message": "hi", '
      '"id_sms_api": 123456789012345678901234}]}').encode(), 200, '"id_sms_api":"123456789012345678901234"'),
    # UTF-16 (JSON allows it)
    ((HEAD + '"messages": [{"phone_number": "+33612345678", "message": "é"}]}').encode("utf-16"), 200, '"sent":1'),
    ((HEAD + '"messages": [{"phone_number": "+33612345678", "message": "hi", "priorite": NaN}]}').encode(), 400,
     "NaN is not a number JSON allows"),
    ((HEAD + '"messages": [{"phone_number": "+33612345678", "message": "hi", "priorite": 1e400}]}').encode(), 400,
     "out of range"),
    ((HEAD + '"messages": [1,]}').encode(), 400, "body is not valid JSON"),
])
async def test_bodies_are_read_as_json_allows(tmp_path, body, status, said):
    async with serving(make_config(tmp_path, devices=[])) as daemon, aiohttp.ClientSession() as http, \
            http.post(api_url(daemon, "/api/v1/sendsms"), data=body,
                      headers={"Content-Type": "application/json"}) as resp:
        answer = await resp.text()
        assert resp.status == status and said in answer, answer


def _read(reader, raw: bytes) -> tuple[str, object]:
    try:
        return "ok", reader(raw)
    except ApiError as exc:
        return "refused", (exc.status, str(exc.body()))


def test_a_body_is_read_the_same_by_orjson_first_as_by_json_alone():
    """What orjson accepts is read as json reads it, and what it refuses (or may read otherwise:
    an integer past 64 bits) goes to json: every body gets the same answer as from json alone.
    Bodies: the seeds' shapes, then random edits of them with the characters that matter."""
    bases = [(HEAD + '"messages": [{"phone_number": "+33612345678", "message": "Hello é", "priorite": 1, '
                     '"id_sms_api": 123}]}').encode(),
             b'[1.5, -0, 2e10, -9223372036854775808, 18446744073709551615, "x\\u00e9\\ud83d\\ude00", '
             b'{"k": [true, null, {}]}]']
    inserts = [b"1234567890123456789012", b"123456789012345678", b"-9223372036854775809", b'"\\ud800"',
               b'"\\udc00"', b"1e999", b"1e308", b"NaN", b"-Infinity", b"\xef\xbb\xbf", b"\xed\xa0\x80", b"\x00"]
    alphabet = b'{}[]":,0123456789-+.eE\\u abcdnulltruefalse\x1f\x7f\xc3\xa9'
    rng = random.Random(11)
    bodies_ = [*bases, b"", b"1", b'"x"', b"[" * 2000 + b"]" * 2000, bases[0].decode().encode("utf-16")]
    for _ in range(20_000):
        body = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(body))
            edit = rng.random()
            if edit < 0.4:
                del body[at]
            elif edit < 0.8:
                body.insert(at, rng.choice(alphabet))
            else:
                body[at:at] = rng.choice(inserts)
        bodies_.append(bytes(body))
    fast = 0
    for raw in bodies_:
        got, want = _read(parse_json, raw), _read(parse_json_slowly, raw)
        assert got == want and repr(got) == repr(want), raw  # repr: 1 and 1.0, -0.0 and 0.0 differ
        fast += got[0] == "ok"
    assert fast > 1000  # and many were read at all


# -- records built by quick_init are the dataclass's own ----------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class _Plain:
    a: int
    b: str = "x"
    c: tuple[int, ...] = ()


@quick_init
@dataclasses.dataclass(frozen=True, slots=True)
class _Quick:
    a: int
    b: str = "x"
    c: tuple[int, ...] = ()


@quick_init
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _QuickKw:
    a: int
    b: str = "x"


def test_quick_init_builds_what_the_dataclass_builds():
    for args, kwargs in [((1,), {}), ((1, "y"), {}), ((1,), {"c": (2,)}), ((), {"a": 3, "b": "z", "c": ()})]:
        plain, quick = _Plain(*args, **kwargs), _Quick(*args, **kwargs)
        assert type(quick) is _Quick
        assert dataclasses.astuple(quick) == dataclasses.astuple(plain)
        assert repr(quick) == repr(plain).replace("_Plain", "_Quick")
        assert quick == _Quick(*args, **kwargs) and hash(quick) == hash(_Quick(*args, **kwargs))
    assert str(inspect.signature(_Quick)) == str(inspect.signature(_Plain))
    assert str(inspect.signature(_QuickKw)) == "(*, a: 'int', b: 'str' = 'x') -> None"
    with pytest.raises(TypeError):
        _Quick()  # a required field missing, as the dataclass says
    with pytest.raises(TypeError):
        _QuickKw(1)  # keyword-only stays keyword-only
    built = _Quick(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.a = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del built.a  # type: ignore[misc]
    assert dataclasses.replace(built, b="q") == _Quick(1, "q")
    assert pickle.loads(pickle.dumps(built)) == built


def test_quick_init_leaves_subclasses_to_the_dataclass():
    @dataclasses.dataclass(frozen=True, slots=True)
    class Sub(_Quick):
        d: int = 4

    sub = Sub(1, "y", (), 5)
    assert (type(sub), sub.a, sub.b, sub.d) == (Sub, 1, "y", 5)


def test_quick_init_refuses_what_it_cannot_copy():
    @dataclasses.dataclass(slots=True)
    class Open:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    for cls in (Open, Factory):
        with pytest.raises(TypeError):
            quick_init(cls)


def test_a_maker_builds_what_the_class_builds_from_every_field_by_position():
    made = maker(_Quick)(1, "y", (2,))
    assert type(made) is _Quick and made == _Quick(1, "y", (2,)) and hash(made) == hash(_Quick(1, "y", (2,)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.a = 2  # type: ignore[misc]
    assert maker(_QuickKw)(1, "z") == _QuickKw(a=1, b="z")
    with pytest.raises(TypeError):
        maker(_Quick)(1)  # every field, no defaults
    with pytest.raises(TypeError):
        maker(_Plain)  # only a class quick_init was given has one
    fields = [f.name for f in dataclasses.fields(Job)]
    values = list(range(len(fields)))
    assert dataclasses.astuple(maker(Job)(*values)) == tuple(values)


def test_judging_makes_the_job_the_keywords_say():
    """judge_message builds its NewJob by position: every field where its name says."""
    rules = Rules(region="FR", timezone="Europe/Paris", public_url="https://gw.example", ttl_s=600.0,
                  forbidden=forbidden_matcher(()))
    judged = judge_message(0, {"phone_number": "+33612345678", "message": "Hi [Lien]", "id_sms_api": "k1",
                               "url": "https://example.com/a", "priorite": 2, "date_to_send": "2030-01-02 03:04:05"},
                           {}, 1, rules)
    new = judged.new
    assert new is not None and new.link_code
    assert new == NewJob(kind="sms", phone_number="+33612345678", message=f"Hi https://gw.example/l/{new.link_code}",
                         id_sms_api="k1", url="https://example.com/a", priority=2, due=new.due, ttl_s=600.0,
                         parts=1, encoding="gsm7", report=True, link_code=new.link_code, sealed=None)
    assert new.due == 1893549845.0  # 2030-01-02 03:04:05 in Paris (UTC+1)
    assert (judged.index, judged.errors, judged.detail, judged.phone_number, judged.id_sms_api) == (
        0, (), None, "+33612345678", "k1")


def test_store_records_are_quick_and_frozen():
    job = Job(1, "a", "k", "sms", "+33612345678", "m", None, 1, 1.0, 2.0, "queued", None, None, 0, 1, "gsm7",
              True, 1.0, 1.0)
    assert dataclasses.replace(job, state="dispatched").state == "dispatched"
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.state = "sent"  # type: ignore[misc]
    new = NewJob(kind="sms", phone_number="+33612345678")
    assert (new.message, new.priority, new.ttl_s, new.link_code) == ("", 1, 86400.0, None)
    assert Enqueued(job, True) == Enqueued(job, True)


# -- one-part GSM-7 texts: counted as segment_count counts them ------------------------

def test_sms_job_counts_parts_as_segment_count():
    rng = random.Random(3)
    alphabet = gsm7.DEFAULT_ALPHABET + "".join(gsm7.EXTENSION_TABLE.values()) + "жé€😀\x1b"
    texts = ["", "x" * 160, "x" * 161, "€" * 80, "€" * 81, "\x1b", "ж" * 70]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400))) for _ in range(3000)]
    texts += ["".join(rng.choice(gsm7.DEFAULT_ALPHABET) for _ in range(rng.randint(150, 170))) for _ in range(500)]
    for text in texts:
        job = sms_job("+33612345678", text)
        seg = gsm7.segment_count(text)
        assert (job.parts, job.encoding) == (seg.parts, seg.encoding), repr(text)


# -- agents begin the highest priority first ----------------------------------------------

class _HeldRadio:
    """A backend whose radio sends one job at a time, each when the test lets it."""
    capabilities = p.Capabilities(sms=True)

    def __init__(self) -> None:
        self.begun: list[str] = []
        self.release = asyncio.Event()

    async def execute(self, job, report) -> None:
        self.begun.append(job.job_id)
        await self.release.wait()
        self.release.clear()
        report(job.job_id, p.JOB_SENT)

    def status(self):
        return None


async def test_agent_begins_waiting_jobs_highest_priority_first(tmp_path):
    radio = _HeldRadio()
    runtime = AgentRuntime(url="ws://127.0.0.1:9", device_id="d", token="t", backend=radio,
                           journal=Journal(tmp_path / "j.jsonl"))
    worker = asyncio.create_task(runtime._worker())
    try:
        def push(*jobs: tuple[str, int]) -> None:
            frame = p.encode(p.Jobs(jobs=tuple(p.SendSms(job_id=j, to="+33612345678", text="hi", priority=prio)
                                               for j, prio in jobs)))
            runtime._on_frame(p.decode(frame, allowed=p.BRIDGE_TO_AGENT))

        push(("1", 0))
        await wait_until(lambda: radio.begun == ["1"], what="the first job begun")
        push(("2", 0), ("3", 1), ("4", 0))
        push(("5", 2))  # a one-time code, behind a campaign already in the phone
        for _ in range(4):
            radio.release.set()
            await wait_until(lambda: not radio.release.is_set(), what="the next job begun")
        await wait_until(lambda: len(radio.begun) == 5, what="every job begun")
        assert radio.begun == ["1", "5", "3", "2", "4"]
        # A frame from a bridge that does not say the priority: 1, as before.
        assert p.SendSms.from_json({"job_id": "6", "to": "+33612345678", "text": "hi"}).priority == 1
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await runtime.aclose()

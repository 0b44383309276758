"""From a bad metric to the call: the exporter's ``/calls`` page and the exemplars on
the call histograms name a call exactly as the call log does (issue 10, item 4)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from exportbuild import CALL_ID, FROM, config, record
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from agent.calls.events import CallEnded
from agent.calls.record import CallRecord
from agent.export.calllog import CallLog
from agent.export.http import MetricsServer
from agent.export.metrics import EXEMPLAR_MAX_CHARS, ProbeMetrics, exemplar
from agent.export.privacy import Pseudonymiser
from agent.export.recent import RecentCalls, query_filters

KEY = bytes(range(32))


def _get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


class Probe:
    """The sinks as the daemon wires them: the call log's form goes to /calls and to
    the exemplars (`agent.daemon.Daemon._emit`)."""

    def __init__(self, privacy: str = "hash", capacity: int = 200) -> None:
        self.log = CallLog("-", "json", Pseudonymiser(privacy, KEY))  # type: ignore[arg-type]
        self.registry = CollectorRegistry()
        self.metrics = ProbeMetrics(self.registry, site="hq", config=config())
        self.recent = RecentCalls(capacity)
        self.server = MetricsServer(self.registry, recent=self.recent)
        self.server.start("127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self.server.port}"

    def end(self, rec: CallRecord) -> dict[str, object]:
        public = self.log.public(rec)
        self.metrics.observe(CallEnded(record=rec), reference=public["call_id"])
        self.recent.add(public)
        return public


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe()
    yield p
    p.server.stop()


def _calls(rec: CallRecord, n: int, tag: str) -> list[CallRecord]:
    return [rec.model_copy(update={"call_id": f"{tag}{i}-{CALL_ID}"}) for i in range(n)]


def test_calls_lists_worst_first_and_filters_by_peer_and_verdict(probe: Probe) -> None:
    clean, lossy = record(), record(lose_every=10)  # 10 % B->A loss: gold allows 1 %
    assert clean.sla.verdict == "met" and lossy.sla.verdict == "violated"
    shown = [probe.end(r) for r in _calls(clean, 3, "met") + _calls(lossy, 2, "bad")]

    status, ctype, body = _get(f"{probe.base}/calls.json")
    assert status == 200 and ctype == "application/json"
    rows = json.loads(body)["calls"]
    # violated first (newest first among equals), then the met ones, newest first
    assert [r["call_id"] for r in rows] == [shown[i]["call_id"] for i in (4, 3, 2, 1, 0)]
    assert [r["sla"]["verdict"] for r in rows] == ["violated"] * 2 + ["met"] * 3

    status, ctype, page = _get(f"{probe.base}/calls")
    assert status == 200 and ctype.startswith("text/html")
    assert 'data-calls="5"' in page and page.count('<tr class="violated">') == 2
    assert page.count('<tr class="met">') == 3
    assert page.count("inbound: loss_ratio: 0.10 (max 0.01)</td>") == 2, page
    assert page.count("loss_ratio: 0.10") == 2  # the call's verdict repeats, not listed
    assert "<script" not in page  # no script at all

    def count(query: str) -> int:
        status, _, body = _get(f"{probe.base}/calls.json?{query}")
        assert status == 200, body
        return len(json.loads(body)["calls"])

    assert count("verdict=violated") == 2 and count("verdict=met") == 3
    assert count("peer=carrier") == 5 and count("peer=nobody") == 0
    assert count("peer=carrier&verdict=violated&limit=1") == 1
    for bad in ("verdict=awful", "limit=0", "limit=x"):
        status, _, body = _get(f"{probe.base}/calls?{bad}")
        assert status == 400, (bad, body)


def test_calls_shows_pseudonyms_only_and_escapes_what_the_network_wrote() -> None:
    hostile = '"><script>alert(1)</script>'
    rec = record().model_copy(update={"from_": f"sip:{hostile}@pbx.example"})
    for privacy in ("hash", "clear"):
        probe = Probe(privacy)
        try:
            shown = probe.end(rec)
            _, _, page = _get(f"{probe.base}/calls")
            _, _, doc = _get(f"{probe.base}/calls.json")
        finally:
            probe.server.stop()
        assert "<script>" not in page and "alert(1)</script>" not in page
        if privacy == "hash":
            assert CALL_ID not in page + doc and "15551230001" not in page + doc
            assert "442071234567" not in page + doc and "alert" not in page + doc
            assert str(shown["call_id"]).startswith("h:") and str(shown["call_id"]) in page
        else:  # clear: as seen, escaped
            assert CALL_ID in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_recent_calls_keeps_the_last_n_and_can_be_turned_off() -> None:
    keep = RecentCalls(3)
    for i in range(5):
        keep.add({"call_id": str(i), "sla": {"verdict": "met"}})
    assert [r["call_id"] for r in keep.rows()] == ["4", "3", "2"]
    off = RecentCalls(0)
    off.add({"call_id": "x"})
    assert off.rows() == []
    assert query_filters("peer=a&verdict=met&limit=7") == ("a", "met", 7)
    assert isinstance(query_filters("limit=100000"), str)


def test_exemplars_carry_the_call_id_the_log_shows(probe: Probe) -> None:
    shown = probe.end(record(lose_every=10))
    ref = str(shown["call_id"])
    assert ref.startswith("h:") and ref != CALL_ID

    status, ctype, text = _get(f"{probe.base}/metrics", "application/openmetrics-text")
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    found: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.exemplar is not None:
                found.setdefault(fam.name, set()).add(s.exemplar.labels["call_id"])
    assert {"voipprobe_call_mos", "voipprobe_call_jitter_seconds",
            "voipprobe_call_loss_ratio", "voipprobe_call_setup_delay_seconds"} <= set(found)
    assert set().union(*found.values()) == {ref}
    assert FROM not in text and CALL_ID not in text

    status, _, plain = _get(f"{probe.base}/metrics")  # the text format has no exemplars
    assert status == 200 and ref not in plain and "# {" not in plain


def test_an_exemplar_fits_the_openmetrics_limit() -> None:
    long_id = "x" * 300 + "@pbx.example"
    labels = exemplar(long_id)
    assert labels is not None
    assert len("call_id") + len(labels["call_id"]) == EXEMPLAR_MAX_CHARS
    assert long_id.startswith(labels["call_id"])
    assert exemplar(None) is None and exemplar("") is None

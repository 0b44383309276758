"""Call log: JSON lines, the one-line format, pseudonymisation modes, the key file, and
reopen after logrotate renamed the file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from exportbuild import CALL_ID, FROM, TO, record

from agent.calls.record import CallRecord
from agent.export.calllog import CallLog
from agent.export.privacy import PrivacyError, Pseudonymiser, load_or_create_key

KEY1 = b"k" * 32
KEY2 = b"j" * 32


@pytest.fixture(scope="module")
def rec() -> CallRecord:
    return record(lose_every=10, dscp_b=0)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_json_line_is_the_record(tmp_path: Path, rec: CallRecord) -> None:
    log = CallLog(tmp_path / "calls.log", "json", Pseudonymiser("clear"))
    log.write(rec)
    log.write(rec)
    log.close()
    out = lines(tmp_path / "calls.log")
    assert len(out) == 2 and out[0] == rec.to_json()
    assert out[0]["from"] == FROM and out[0]["to"] == TO and out[0]["call_id"] == CALL_ID


def test_hash_mode_is_stable_per_key(tmp_path: Path, rec: CallRecord) -> None:
    def logged(key: bytes, name: str) -> dict[str, object]:
        log = CallLog(tmp_path / name, "json", Pseudonymiser("hash", key))
        log.write(rec)
        log.close()
        (one,) = lines(tmp_path / name)
        return one

    a, b, c = logged(KEY1, "a.log"), logged(KEY1, "b.log"), logged(KEY2, "c.log")
    text = json.dumps(a)
    assert "+15551230001" not in text and "+442071234567" not in text
    assert CALL_ID.split("@")[0] not in text and "10.1.2.3@" not in text
    assert str(a["from"]).startswith("sip:h:") and str(a["from"]).endswith("@pbx.example")
    assert str(a["to"]).endswith("@carrier.example")
    assert str(a["call_id"]).startswith("h:") and len(str(a["call_id"])) == 14
    assert (a["from"], a["to"], a["call_id"]) == (b["from"], b["to"], b["call_id"])
    assert a["from"] != c["from"] and a["to"] != c["to"] and a["call_id"] != c["call_id"]
    assert a["from"] != a["to"]
    # the rest of the record is untouched
    assert a["directions"] == rec.to_json()["directions"] and a["peer"] == "carrier"


def test_drop_mode_removes_numbers(tmp_path: Path, rec: CallRecord) -> None:
    log = CallLog(tmp_path / "d.log", "json", Pseudonymiser("drop", KEY1))
    log.write(rec)
    log.close()
    (one,) = lines(tmp_path / "d.log")
    assert one["from"] is None and one["to"] is None
    assert str(one["call_id"]).startswith("h:")
    assert "+1555" not in json.dumps(one)


def test_uri_forms() -> None:
    p = Pseudonymiser("hash", KEY1)
    tok = p.token("+15551230001")
    assert p.uri("sip:+15551230001@carrier.example;user=phone") == (
        f"sip:{tok}@carrier.example;user=phone")
    assert p.uri("sips:+15551230001:secret@h.example") == f"sips:{tok}@h.example"
    assert p.uri("tel:+15551230001;phone-context=x") == f"tel:{tok};phone-context=x"
    assert p.uri("+15551230001") == tok
    assert p.uri("sip:gateway.example") == "sip:gateway.example"
    assert p.uri(None) is None
    assert Pseudonymiser("clear").uri(FROM) == FROM
    with pytest.raises(PrivacyError):
        Pseudonymiser("hash", b"")
    with pytest.raises(PrivacyError):
        Pseudonymiser("scramble", KEY1)  # type: ignore[arg-type]


def test_key_created_once_0600_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    k1 = load_or_create_key(state)
    k2 = load_or_create_key(state)
    assert k1 == k2 and len(k1) == 32
    mode = stat.S_IMODE((state / "privacy.key").stat().st_mode)
    assert mode == 0o600
    (state / "privacy.key").write_bytes(b"short")
    with pytest.raises(PrivacyError):
        load_or_create_key(state)


def test_rename_is_noticed_before_the_next_write_and_hup_reopens(
    tmp_path: Path, rec: CallRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    """logrotate renames, then sends SIGHUP: a record between the two already goes to a
    new file at the path (the inode of the path is not the open file's any more)."""
    path = tmp_path / "calls.log"
    log = CallLog(path, "json", Pseudonymiser("hash", KEY1))
    log.write(rec)
    path.rename(tmp_path / "calls.log.1")  # logrotate
    log.write(rec)  # before the HUP: noticed, the path is reopened
    log.reopen()  # the HUP
    log.write(rec)
    log.close()
    assert len(lines(tmp_path / "calls.log.1")) == 1
    assert len(lines(path)) == 2
    assert log.stats().reopens == {"missing": 1, "signal": 1}
    err = capsys.readouterr().err
    assert err.count("the file was removed or renamed without a SIGHUP") == 1


def test_a_new_file_put_at_the_path_is_written_to(tmp_path: Path, rec: CallRecord) -> None:
    """logrotate's ``create``: rename, then a new empty file at the path."""
    path = tmp_path / "calls.log"
    log = CallLog(path, "json")
    log.write(rec)
    path.rename(tmp_path / "calls.log.1")
    path.touch()
    log.write(rec)
    log.close()
    assert len(lines(tmp_path / "calls.log.1")) == 1 and len(lines(path)) == 1
    assert log.stats().reopens == {"replaced": 1}


def test_line_format(tmp_path: Path, rec: CallRecord) -> None:
    log = CallLog(tmp_path / "l.log", "line", Pseudonymiser("hash", KEY1))
    log.write(rec)
    log.close()
    (line,) = (tmp_path / "l.log").read_text().splitlines()
    assert line.startswith("2023-11-14T22:13:20.000Z call=h:")
    assert " -> sip:h:" in line and "+1555" not in line
    assert " 200 normal " in line and "codec=PCMA" in line and "setup=0.250s" in line
    assert "outbound[mos=4.38 loss=0.00%" in line
    assert "inbound[mos=3.39 loss=9.77%" in line and "dscp=0%]" in line
    assert line.endswith("sla=violated[loss_ratio: 0.10 (max 0.01), "
                         "media_dscp_compliance: 0.00 (min 0.95), mos_cq: 3.39 (min 4)] "
                         "profile=gold")


def test_stdout_one_flushed_line_per_call(capsys: pytest.CaptureFixture[str],
                                          rec: CallRecord) -> None:
    log = CallLog("-", "json", Pseudonymiser("hash", KEY1))
    log.write(rec)
    log.reopen()  # a no-op for stdout
    log.write(rec)
    log.close()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and json.loads(out[0])["kind"] == "call"

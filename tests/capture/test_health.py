"""Source health and loss windows (agent/capture/health.py): fake counters, fake clock."""

from __future__ import annotations

from agent.capture.afpacket import CaptureStats
from agent.capture.health import LossWindows, SourceMonitor
from agent.capture.mirror_listener import MirrorStats

T0 = 1_700_000_000.0


def monitor(silent_after_s: float = 300.0) -> SourceMonitor:
    return SourceMonitor(["eth0", "eth9"], ["hep:9060"], silent_after_s=silent_after_s,
                         now_ts=T0)


def ok_stats(packets: int = 10, drops: int = 0, **more: CaptureStats) -> dict[str, object]:
    return {"eth0": CaptureStats(packets=packets, drops=drops),
            "eth9": CaptureStats(packets=packets),
            "hep:9060": CaptureStats(packets=packets), **more}


def test_a_missing_interface_is_unhealthy_and_named_until_it_appears() -> None:
    m = monitor()
    missing = CaptureStats(packets=0, up=False, downs=1, down_reason="no such interface")
    m.observe(ok_stats(eth9=missing), 0, T0 + 1)
    ok, details = m.health(T0 + 1)
    assert not ok
    assert details["problems"] == ["eth9: down: no such interface"]
    assert details["sources"]["eth9"] == {
        "kind": "interface", "up": False, "state": "down", "reason": "no such interface",
        "last_packet_ts": None, "packets": 0, "drops": 0}
    assert details["sources"]["eth0"]["state"] == "ok"
    assert [s.up for s in m.statuses()] == [True, False, True]
    # plugged in: up, healthy, and its first packets give it a last packet time
    m.observe(ok_stats(eth9=CaptureStats(packets=0, downs=1, reopens=1)), 0, T0 + 2)
    assert m.health(T0 + 2) == (True, {"sources": m.health(T0 + 2)[1]["sources"]})
    m.observe(ok_stats(eth9=CaptureStats(packets=4, downs=1, reopens=1)), 0, T0 + 3)
    assert {s.name: s.last_packet_ts for s in m.statuses()}["eth9"] == T0 + 3


def test_a_source_the_capture_does_not_report_is_down() -> None:
    m = monitor()
    m.observe({"eth0": CaptureStats(packets=1)}, 0, T0 + 1)
    ok, details = m.health(T0 + 1)
    assert not ok and details["problems"] == [
        "eth9: down: the capture reports nothing for it",
        "hep:9060: down: the capture reports nothing for it"]


def test_silence_counts_from_the_last_packet_and_from_the_start() -> None:
    m = monitor(silent_after_s=10.0)
    m.observe(ok_stats(packets=0), 0, T0 + 1)
    m.observe({**ok_stats(packets=0), "eth0": CaptureStats(packets=5)}, 0, T0 + 5)
    assert m.health(T0 + 10)[0]  # 10 s since the start: not longer than 10 s
    ok, details = m.health(T0 + 12)  # eth9 and hep: nothing since the start, 12 s ago
    assert not ok
    assert details["problems"] == [
        "eth9: silent: no packet for 12 s (capture.silent_after_s: 10)",
        "hep:9060: silent: no packet for 12 s (capture.silent_after_s: 10)"]
    assert details["sources"]["eth0"]["state"] == "ok"  # its packet came at T0 + 5
    # health is computed at the request's time, not frozen at the last read
    assert m.health(T0 + 16)[1]["sources"]["eth0"]["state"] == "silent"
    # packets again: healthy again
    m.observe(ok_stats(packets=9), 0, T0 + 17)
    assert m.health(T0 + 17)[0]
    assert all(s.last_packet_ts == T0 + 17 for s in m.statuses())


def test_silent_after_zero_never_calls_a_source_silent() -> None:
    m = monitor(silent_after_s=0.0)
    m.observe(ok_stats(packets=0), 0, T0 + 1)
    assert m.health(T0 + 86_400)[0]


def test_a_source_that_comes_up_gets_the_full_silent_time() -> None:
    m = monitor(silent_after_s=10.0)
    down = CaptureStats(up=False, down_reason="interface is down")
    m.observe(ok_stats(eth9=down), 0, T0 + 1)
    m.observe(ok_stats(eth9=down), 0, T0 + 50)
    m.observe(ok_stats(packets=10, eth9=CaptureStats(packets=0, reopens=1)), 0, T0 + 51)
    ok, details = m.health(T0 + 55)
    assert details["sources"]["eth9"]["state"] == "ok"  # 4 s since it came up
    assert not ok  # eth0 and hep:9060 sent nothing since the start
    assert m.health(T0 + 62)[1]["sources"]["eth9"]["state"] == "silent"


def test_ring_drops_make_a_loss_window_between_two_reads() -> None:
    m = monitor()
    m.observe(ok_stats(packets=10, drops=0), 0, T0 + 1)
    m.observe(ok_stats(packets=20, drops=0), 0, T0 + 2)
    m.observe(ok_stats(packets=30, drops=7), 0, T0 + 3)  # dropped between T0+2 and T0+3
    m.observe(ok_stats(packets=40, drops=7), 0, T0 + 4)
    assert len(m.windows) == 1
    assert m.lossy(T0 + 2.5, T0 + 2.6)
    assert m.lossy(T0 - 100, T0 + 2.0)  # a call that ended as the window began
    assert m.lossy(T0 + 3.0, T0 + 50)
    assert not m.lossy(T0 - 100, T0 + 1.9)
    assert not m.lossy(T0 + 3.1, T0 + 50)
    assert {s.name: s.drops for s in m.statuses()}["eth0"] == 7


def test_consecutive_lossy_reads_merge_and_a_counter_restart_is_no_loss_of_its_own() -> None:
    m = monitor()
    for k, drops in enumerate((0, 3, 5, 9), start=1):
        m.observe(ok_stats(drops=drops), 0, T0 + k)
    assert len(m.windows) == 1 and m.lossy(T0 + 1.5, T0 + 1.6) and m.lossy(T0 + 4, T0 + 9)
    m.observe(ok_stats(drops=9), 0, T0 + 5)
    m.observe(ok_stats(drops=0), 0, T0 + 6)  # reopened after a reload: counts from 0
    assert not m.lossy(T0 + 4.5, T0 + 6)
    m.observe(ok_stats(drops=2), 0, T0 + 7)  # 2 new drops after the restart
    assert m.lossy(T0 + 6.5, T0 + 6.6) and len(m.windows) == 2


def test_an_interface_gone_mid_capture_and_mirror_sequence_loss_are_losses() -> None:
    m = monitor()
    m.observe(ok_stats(), 0, T0 + 1)
    gone = CaptureStats(packets=10, up=False, downs=1, down_reason="capture stopped: x")
    m.observe(ok_stats(eth0=gone), 0, T0 + 2)
    assert m.lossy(T0 + 1.5, T0 + 1.5)
    m.observe(ok_stats(eth0=gone), 0, T0 + 3)
    m.observe(ok_stats(eth0=gone), 0, T0 + 4)
    assert not m.lossy(T0 + 3.5, T0 + 3.6)
    m.observe(ok_stats(eth0=gone), 12, T0 + 5)  # 12 mirrored copies never arrived
    assert m.lossy(T0 + 4.5, T0 + 4.6)
    m.observe(ok_stats(eth0=gone), 12, T0 + 6)
    assert not m.lossy(T0 + 5.5, T0 + 5.6)


def test_an_interface_missing_from_the_start_is_unhealthy_but_no_loss() -> None:
    m = monitor()
    missing = CaptureStats(up=False, downs=1, down_reason="no such interface")
    m.observe(ok_stats(eth9=missing), 0, T0 + 1)
    m.observe(ok_stats(eth9=missing), 0, T0 + 2)
    assert len(m.windows) == 0 and not m.health(T0 + 2)[0]


def test_listener_drops_are_not_capture_loss() -> None:
    m = SourceMonitor(["eth0"], ["hep:9060", "edge"], now_ts=T0)
    mirror = MirrorStats("tzsp", datagrams=5, bytes=500, denied=3, invalid=1,
                         not_ethernet=0, up=True)
    m.observe({"eth0": CaptureStats(packets=1), "hep:9060": CaptureStats(packets=1),
               "edge": mirror}, 0, T0 + 1)
    m.observe({"eth0": CaptureStats(packets=2),
               "hep:9060": CaptureStats(packets=9, drops=40),  # denied senders, not HEP
               "edge": MirrorStats("tzsp", 9, 900, 9, 9, 9, up=True)}, 0, T0 + 2)
    assert len(m.windows) == 0
    assert {s.name: s.drops for s in m.statuses()} == {"eth0": 0, "hep:9060": 40, "edge": 27}


def test_a_listeners_socket_buffer_overflow_is_capture_loss() -> None:
    m = SourceMonitor([], ["hep:9060", "edge"], now_ts=T0)
    m.observe({"hep:9060": CaptureStats(packets=1), "edge": MirrorStats(
        "tzsp", 1, 100, 0, 0, 0, up=True)}, 0, T0 + 1)
    m.observe({"hep:9060": CaptureStats(packets=2), "edge": MirrorStats(
        "tzsp", 2, 200, 0, 0, 0, up=True, socket_drops=4)}, 0, T0 + 2)
    m.observe({"hep:9060": CaptureStats(packets=3), "edge": MirrorStats(
        "tzsp", 3, 300, 0, 0, 0, up=True, socket_drops=4)}, 0, T0 + 3)
    m.observe({"hep:9060": CaptureStats(packets=4, drops=1, socket_drops=1),
               "edge": MirrorStats("tzsp", 4, 400, 0, 0, 0, up=True, socket_drops=4)},
              0, T0 + 4)
    assert m.lossy(T0 + 1.5, T0 + 1.6) and not m.lossy(T0 + 2.5, T0 + 2.6)
    assert m.lossy(T0 + 3.5, T0 + 3.6) and len(m.windows) == 2


def test_reconfigure_keeps_the_history_of_the_sources_kept() -> None:
    m = monitor(silent_after_s=10.0)
    m.observe(ok_stats(packets=1), 0, T0 + 1)
    m.observe(ok_stats(packets=2), 0, T0 + 2)
    m.reconfigure(["eth0", "eth1"], [], silent_after_s=0.0)
    ok, details = m.health(T0 + 100)
    assert sorted(details["sources"]) == ["eth0", "eth1"]
    assert details["sources"]["eth0"]["last_packet_ts"] == T0 + 2
    assert details["problems"] == ["eth1: down: its counters were not read yet"]
    assert not ok


def test_loss_windows_are_bounded_and_forgetting_flags_rather_than_clears() -> None:
    w = LossWindows(max_windows=2)
    w.add(10.0, 11.0)
    w.add(20.0, 21.0)
    w.add(30.0, 31.0)  # the first is forgotten: its end becomes the horizon
    assert len(w) == 2 and w.horizon_ts == 11.0
    assert w.overlaps(5.0, 6.0)  # started before the horizon: may have met it
    assert not w.overlaps(12.0, 19.0)
    assert w.overlaps(12.0, 20.0) and w.overlaps(30.5, 40.0)
    assert not w.overlaps(31.5, 40.0)

"""The live agent: a packet source -> the engine -> metrics and the call log.

Theory of operation. `Daemon` owns one loop (`serve`): poll the source for
batches (at most `POLL_TIMEOUT_S`), feed them to the same `Engine` that
``voipprobe analyze`` uses, hand every event to the metrics and every
`CallEnded` record to the call log. About once a second (`TICK_INTERVAL_S`) it
pushes the engine's and the capture's counters to the metrics and calls
``engine.tick(now)``.

``now`` is packet time, as in the core (DESIGN rule 1: a replayed capture
must give the records the live run gave): the timestamp of the latest packet.
Timers due while packets flow fire inside ``engine.feed`` at their own packet
time. When packets stop arriving, packet time would stop too and the last calls
would never time out, so ``now`` then advances by the monotonic time elapsed
since that packet arrived, held back by the block timeout and `TICK_LAG_S`: the
ring hands packets
over up to a block timeout late, and a timer fired ahead of a packet still in
the ring would make the live records differ from a capture's. Kernel
timestamps and the monotonic clock agree to well under the idle timeouts
(seconds), and a wall-clock step (NTP) cannot end or stretch calls.

Signals only set flags; the loop acts on them between polls, so no handler
runs engine code re-entrantly. SIGHUP reloads the configuration (`reload`):
an invalid file, or one whose paths are unusable (the call log cannot be
opened, the privacy key in ``state_dir`` cannot be read or created), keeps the
running configuration. The call log never stops the loop: a write fault
holds records in its queue, each tick retries them (`CallLog.retry`), and
what overflows is counted, as is what is still queued at exit. SIGTERM/SIGINT stop
(`shutdown`): every active call ends with end reason ``shutdown`` and is
written before the process exits, well within systemd's stop timeout
(a poll returns within `POLL_TIMEOUT_S`; finishing is bounded by the tables'
caps). sd_notify: READY=1 when serving, WATCHDOG=1 from the loop itself (a
hung loop stops kicking and systemd restarts it), RELOADING=1 / READY=1
around a reload, STOPPING=1 at shutdown.

Source health and capture loss (`agent.capture.health`): each tick also hands the
sources' counters to a `SourceMonitor`, with the wall-clock time of the read (the
clock the kernel stamps packets with), for ``/health`` and the ``capture_up`` and
last-packet metrics. A record is stamped ``capture_lossy`` here, as it leaves the
engine: its lifetime, first packet (INVITE or first RTP) to ``end_ts`` in packet
timestamps, plus the media idle timeout for a call that timed out (its end may have
been among the lost packets), is compared with the windows between two reads in
which packets were lost; a record that ends after the latest read makes the daemon
read the counters first (unless they were read in the last `REREAD_AFTER_S`). The
engine never sees any of it.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol

from agent import sdnotify
from agent.calls.events import CallEnded, Event
from agent.calls.record import CallRecord
from agent.capture.afpacket import AfPacketSource
from agent.capture.batch import Batch
from agent.capture.fallback import ScapySource
from agent.capture.health import SourceMonitor, SourceStatus
from agent.capture.overload import MEDIA_FACTOR, LoadShedder
from agent.config import (
    CaptureConfig,
    Config,
    ConfigError,
    Override,
    join_listen,
    load_config,
)
from agent.counters import CounterSnapshot
from agent.decode.sequence import SequenceGaps
from agent.engine import Engine, EngineConfig
from agent.export.calllog import CallLog, CallLogStats
from agent.export.evidence import EvidenceWriter, open_evidence
from agent.export.hepout import HepOut
from agent.export.http import HealthCheck, MetricsServer, exposure_warning
from agent.export.metrics import ProbeMetrics
from agent.export.privacy import PrivacyError, Pseudonymiser, load_or_create_key
from agent.export.recent import RecentCalls
from agent.export.webconfig import PLAIN, WebSettings, load_web_config
from agent.gctune import tune_gc
from agent.os_errors import StartupError, capture_error, listen_error
from agent.startup import startup_line

POLL_TIMEOUT_S = 0.25  # bounds the reaction to a signal
TICK_INTERVAL_S = 1.0  # metrics update and idle sweep
# How far an idle tick stays behind the extrapolated packet time, beyond the ring's block
# timeout (capture.block_timeout_ms, 1 s by default) that delays packets.
TICK_LAG_S = 1.5


# Packets are fed in pieces that take about PIECE_BUDGET_S of wall time each (the cost per
# packet measured on the previous pieces): between pieces the loop checks for a stop and
# ticks. Small pieces cost more per packet (every batch visits every open stream), so a
# piece is as large as the budget allows, within these bounds.
PIECE_BUDGET_S = 0.1
MIN_PIECE_ROWS, MAX_PIECE_ROWS, FIRST_PIECE_ROWS = 512, 65536, 4096
# A record that ends after the latest read of the sources' counters reads them again
# first, unless that read is this recent (SIGTERM finishing 50,000 calls reads once).
REREAD_AFTER_S = 0.1


class PacketSource(Protocol):
    """What the loop needs of a capture: AfPacketSource, ScapySource, a test fake."""

    def poll(self, timeout_s: float) -> list[Batch]: ...

    def stats(self) -> Any: ...

    def close(self) -> None: ...


class MetricsSink(Protocol):
    """The exporter's collector (`agent.export.metrics.ProbeMetrics`)."""

    def observe(self, event: Event, reference: str | None = None) -> None: ...

    def update(self, counters: CounterSnapshot, capture: Any = None,
               sequences: Mapping[str, SequenceGaps] | None = None) -> None: ...

    def set_config(self, config: Config) -> None: ...

    def config_reloaded(self, ok: bool, ts: float | None = None) -> None: ...

    def update_call_log(self, stats: CallLogStats) -> None: ...

    def update_sources(self, statuses: Sequence[SourceStatus]) -> None: ...

    def update_hep_out(self, stats: Sequence[Any]) -> None: ...


class CallSink(Protocol):
    """The call log (`agent.export.calllog.CallLog`)."""

    def public(self, record: CallRecord) -> dict[str, Any]: ...

    def write(self, record: CallRecord, public: dict[str, Any] | None = None) -> None: ...

    def retry(self) -> None: ...

    def reopen(self) -> None: ...

    def take_over(self, old: object) -> None: ...

    def stats(self) -> CallLogStats: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class PacketClock:
    """Packet time, extrapolated by the monotonic clock while no packet arrives."""

    last_packet_ts: float | None = None
    last_packet_mono: float = 0.0

    def saw(self, packet_ts: float, mono: float) -> None:
        if self.last_packet_ts is None or packet_ts >= self.last_packet_ts:
            self.last_packet_ts = packet_ts
        self.last_packet_mono = mono

    def now(self, mono: float) -> float | None:
        """Packet time at monotonic time ``mono`` (None before the first packet)."""
        if self.last_packet_ts is None:
            return None
        return self.last_packet_ts + max(0.0, mono - self.last_packet_mono)


def reconfigure_engine(engine: Engine, config: Config) -> list[str]:
    """Apply a reloaded config to a running engine (see `Engine.reconfigure`)."""
    return engine.reconfigure(config)



def piece_rows(rows: int, seconds: float, current: int) -> int:
    """The next piece's size: what fits `PIECE_BUDGET_S` at the cost per packet of a piece
    of ``rows`` that took ``seconds``, moving at most 2x from ``current`` per piece."""
    if rows <= 0:
        return current
    fit = PIECE_BUDGET_S * rows / seconds if seconds > 0 else MAX_PIECE_ROWS
    fit = min(max(fit, current / 2), current * 2)
    return int(min(max(fit, MIN_PIECE_ROWS), MAX_PIECE_ROWS))

class Daemon:
    """The capture loop with its sinks; every side effect is injected for tests."""

    def __init__(
        self,
        config: Config,
        *,
        source: PacketSource,
        metrics: MetricsSink,
        call_log: CallSink,
        load: Callable[[], Config],
        open_call_log: Callable[[Config], CallSink] | None = None,
        open_source: Callable[[CaptureConfig], PacketSource] | None = None,
        reload_exporter: Callable[[Config], None] | None = None,
        notify: Callable[[str], object] = sdnotify.notify,
        watchdog_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        err: IO[str] | None = None,
        recent: RecentCalls | None = None,
        shed_lag_s: float | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.recent = recent  # the exporter's /calls page, fed the log's records
        self.metrics = metrics
        self.call_log = call_log
        self.engine = Engine(EngineConfig(config=config))
        self.packet_clock = PacketClock()
        if shed_lag_s is None:  # the config's; 0 never sheds
            shed_lag_s = config.capture.shed_lag_s or None
        self.shedder = LoadShedder(shed_lag_s)  # behind: shed RTP discovery, keep SIP
        self._load = load
        self._open_call_log = open_call_log
        self._open_source = open_source
        self._reload_exporter = reload_exporter
        self._notify = notify
        self._watchdog = sdnotify.Watchdog(watchdog_s, notify, clock)
        self._clock = clock
        self._wall = wall
        self._piece_rows = FIRST_PIECE_ROWS
        self.sources = SourceMonitor(config.capture.interfaces, listener_names(config.capture),
                                     silent_after_s=config.capture.silent_after_s,
                                     now_ts=wall())
        self._err = err
        self._read_sources()  # /health and capture_up tell a missing interface at once
        metrics.update_sources(self.sources.statuses())
        self._next_tick = clock() + TICK_INTERVAL_S
        self._stop = False
        self._reload = False
        self.records_written = 0
        self.evidence = self._open_evidence(config)
        # HEP out (agent/export/hepout.py): the engine's tap; changes apply after a restart
        self.hep_out = open_hep_out(config) if config.hep_out.collectors else None
        self.engine.tap = self.hep_out

    def _open_evidence(self, config: Config) -> EvidenceWriter | None:
        """The evidence pcap writer (agent/export/evidence.py); a key that cannot be
        read turns it off, said once: capture never stops for evidence."""
        try:
            return open_evidence(config)
        except (PrivacyError, OSError) as exc:
            self._log(f"evidence pcaps off: {exc}")
            return None

    def _log(self, text: str) -> None:
        print(f"voipprobe: {text}", file=self._err or sys.stderr, flush=True)

    # -- signals (flags only; the loop acts) ---------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop

    def request_stop(self, *_: object) -> None:
        self._stop = True

    def request_reload(self, *_: object) -> None:
        self._reload = True

    def install_signal_handlers(self) -> None:
        def stop(_sig: int, _frame: FrameType | None) -> None:
            self.request_stop()

        def hup(_sig: int, _frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    # -- the loop ---------------------------------------------------------------------

    def serve(self) -> None:
        """Run until a stop is requested, then shut down (flushing every call)."""
        self._notify("READY=1")
        while not self._stop:
            if self._reload:
                self._reload = False
                self.reload()
            self.step()
        self.shutdown()

    def step(self, timeout_s: float = POLL_TIMEOUT_S) -> None:
        """One iteration: poll, feed, and (about once a second) tick and update metrics."""
        batches = self.source.poll(timeout_s)
        # SIGTERM stops between pieces (`PIECE_BUDGET_S`), and the once-a-second tick and
        # metrics run between them too: a flood's backlog (seconds of it) neither delays
        # the stop nor freezes the metrics; every call is flushed at the stop
        for b in batches:
            pos = 0
            while pos < len(b) and not self._stop:
                batch = b.rows(pos, pos + self._piece_rows)
                pos += len(batch)
                t0 = time.perf_counter()
                self._feed(batch)
                self._piece_rows = piece_rows(len(batch), time.perf_counter() - t0,
                                              self._piece_rows)
                self.packet_clock.saw(float(batch.ts.max()), self._clock())
                self._maybe_tick()
        self._maybe_tick()
        self._watchdog.kick()

    def _feed(self, batch: Batch) -> None:
        """Feed one piece; while the loop is behind (`LoadShedder`), with RTP discovery
        shed, and the span of what was shed kept as a loss window."""
        level = self.shedder.observe(float(batch.ts.max()), self._wall())
        shed = level >= 1
        self.engine.shed_media = level >= 2
        if shed != self.engine.shed:
            self.engine.shed = shed
            if shed and (self.shedder.episodes <= 3 or self.shedder.episodes % 100 == 0):
                self._log(f"behind by {self.shedder.lag_s:.1f} s: RTP discovery shed "
                          "(SIP, RTCP and known media kept; all media past "
                          f"{MEDIA_FACTOR * (self.shedder.budget_s or 0):.0f} s), counted in "
                          "voipprobe_overload_shed_packets_total")
        counters, route = self.engine.streams.counters, self.engine.route
        before = counters.shed_rows + route.shed_media_rows
        self._emit(self.engine.feed(batch))
        if counters.shed_rows + route.shed_media_rows != before:
            self.shedder.shed(float(batch.ts.min()), float(batch.ts.max()))

    def _maybe_tick(self) -> None:
        """About once a second: fire due timers at the extrapolated packet time, and
        update the metrics."""
        mono = self._clock()
        if mono < self._next_tick:
            return
        self._next_tick = mono + TICK_INTERVAL_S
        now = self.packet_clock.now(mono)
        if now is not None:
            lag = self.config.capture.block_timeout_ms / 1000.0 + TICK_LAG_S
            self._emit(self.engine.tick(now - lag))
        self.call_log.retry()
        self._update_metrics()

    def _update_metrics(self) -> None:
        stats, gaps = self._read_sources()
        snapshot = self.engine.snapshot()
        if self.evidence is not None:  # the files written: counted beside the core's
            st = self.evidence.stats
            snapshot = replace(snapshot, evidence=replace(
                snapshot.evidence, files_written=st.written, write_errors=st.write_errors))
        self.metrics.update(snapshot, stats, gaps)
        self.metrics.update_sources(self.sources.statuses())
        self.metrics.update_call_log(self.call_log.stats())
        if self.hep_out is not None:
            self.metrics.update_hep_out(self.hep_out.stats())

    def _read_sources(self) -> tuple[Any, Mapping[str, SequenceGaps]]:
        """The sources' counters and the mirror sequence gaps, handed to the monitor."""
        stats = self.source.stats()
        gaps = self.engine.decoder.sequence_gaps()
        self.sources.observe(stats if isinstance(stats, Mapping) else None,
                             sum(g.lost for g in gaps.values()), self._wall())
        return stats, gaps

    def _emit(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, CallEnded):
                if self.evidence is not None:
                    event = self.evidence.process(event)
                event = replace(event, record=self._stamp(event.record))
            if not isinstance(event, CallEnded):
                self.metrics.observe(event)
                continue
            if self.hep_out is not None:
                self.hep_out.call_ended(event.record)
            public = self.call_log.public(event.record)  # as the log shows it
            self.metrics.observe(event, reference=public.get("call_id"))
            if self.recent is not None:
                self.recent.add(public)
            self.call_log.write(event.record, public)
            self.records_written += 1

    def _stamp(self, record: CallRecord) -> CallRecord:
        """The record, flagged ``capture_lossy`` when its lifetime met a loss window."""
        start, end = call_lifetime(record, self.config.calls.media_idle_timeout_s)
        last = self.sources.last_read_ts
        if end > last and self._wall() - last > REREAD_AFTER_S:  # losses may be unread
            self._read_sources()
        if not (self.sources.lossy(start, end) or self.shedder.lossy(start, end)):
            return record
        return record.model_copy(update={"capture_lossy": True})

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``/health``: not ok while stopping, or while a configured source is down or
        silent (``status`` then ``degraded``, ``problems`` naming each source and why)."""
        ok, details = self.sources.health(self._wall())
        doc: dict[str, Any] = {}
        if self.stopping:
            doc["status"] = "stopping"
        elif not ok:
            doc["status"] = "degraded"
        doc.update(packets=self.engine.packets, calls_written=self.records_written, **details)
        return ok and not self.stopping, doc

    # -- reload -----------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the configuration (SIGHUP). Invalid, or its paths unusable (a new call
        log that cannot be opened, a privacy key that cannot be read or created): keep
        the running one, say why on stderr, reload metric 0. Valid: apply it without
        losing running calls, reopen the call log (logrotate), reload metric 1."""
        try:
            new = self._load()
            call_log = self._new_call_log(new)
        except (ConfigError, PrivacyError, OSError) as exc:
            self._log(f"reload refused, keeping the running configuration: {exc}")
            self.metrics.config_reloaded(False)
            return False
        try:
            if self._reload_exporter is not None:  # the web config file: TLS, basic auth
                self._reload_exporter(new)
        except ConfigError as exc:
            if call_log is not None:
                call_log.close()
            self._log(f"reload refused, keeping the running configuration: {exc}")
            self.metrics.config_reloaded(False)
            return False
        self._notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        old, self.config = self.config, new
        self.metrics.set_config(new)
        if (new.evidence, new.state_dir, new.privacy) != (old.evidence, old.state_dir,
                                                          old.privacy):
            writer = self._open_evidence(new)
            if writer is not None and self.evidence is not None:
                writer.stats = self.evidence.stats  # the counters go on
            self.evidence = writer
        if new.hep_out != old.hep_out:
            self._log("reload: hep_out changed; it applies after a restart")
        for name in reconfigure_engine(self.engine, new):
            self._log(f"reload: {name} changed; it applies after a restart")
        if new.exporter.model_copy(update={"web_config": old.exporter.web_config}) \
                != old.exporter:
            self._log("reload: exporter settings changed; they apply after a restart")
        self.sources.reconfigure(new.capture.interfaces, listener_names(new.capture),
                                 silent_after_s=new.capture.silent_after_s)
        if new.capture.model_copy(update={"silent_after_s": old.capture.silent_after_s}) \
                != old.capture:
            self._reopen_source(new.capture)
        if call_log is not None:
            call_log.take_over(self.call_log)  # its queue and counts go on in the new one
            self.call_log = call_log
        else:
            self.call_log.reopen()
        self.metrics.config_reloaded(True, time.time())
        self._notify("READY=1")
        return True

    def _new_call_log(self, new: Config) -> CallSink | None:
        """The call log ``new`` asks for, opened before anything is applied (so unusable
        paths refuse the reload); None when it is the running one's."""
        old = self.config
        if self._open_call_log is None or (
            new.call_log == old.call_log and new.privacy == old.privacy
            and new.addresses == old.addresses and new.state_dir == old.state_dir
        ):
            return None
        return self._open_call_log(new)

    def _reopen_source(self, capture: CaptureConfig) -> None:
        if self._open_source is None:
            self._log("reload: capture settings changed; they apply after a restart")
            return
        try:
            source = self._open_source(capture)
        except OSError as exc:
            self._log(f"reload: cannot open the new capture ({exc}); keeping the old one")
            return
        self.source.close()
        self.source = source

    # -- shutdown ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """Every active call ends (end reason ``shutdown``) and is written; close all."""
        self._notify("STOPPING=1")
        self._read_sources()  # losses of the last second flag the calls finished now
        self._emit(self.engine.finish())
        try:
            self._update_metrics()
        finally:
            self.source.close()
            self.call_log.close()
            if self.hep_out is not None:
                self.hep_out.close()


# -- the real sources and sinks -------------------------------------------------------


def kept_ports(capture: CaptureConfig) -> list[int]:
    """Ports whose UDP (and TCP) the kernel filter keeps whole: SIP, the tunnels that
    carry it (VXLAN, TZSP) and HEP (UDP datagrams or HEP3 over TCP): their headers do not
    start with a letter, so UDP would be cut to ``media_snaplen``."""
    return sorted({*capture.sip_ports, *capture.vxlan_ports, *capture.tzsp_ports,
                   *capture.hep_ports})


def open_source(capture: CaptureConfig) -> PacketSource:
    """The live capture (AF_PACKET ring on Linux, the scapy fallback elsewhere), with
    the configured HEP, TZSP and VXLAN listeners beside it."""
    try:
        ring = open_ring(capture)
    except StartupError:
        raise
    except OSError as exc:
        raise capture_error(exc, capture.interfaces) from exc
    if not (capture.hep_listeners or capture.tzsp_listeners or capture.vxlan_listeners):
        return ring
    from agent.capture.hep_listener import HepListener, HepTcpListener
    from agent.capture.mirror_listener import MirrorListener
    from agent.capture.multisource import MultiSource

    sources: list[PacketSource] = [ring]
    setting, address = "", ""  # the listener being opened, for the error
    try:
        for i, h in enumerate(capture.hep_listeners):
            setting, address = f"capture.hep_listeners[{i}]", join_listen(h.address, h.port)
            kind = HepListener if h.transport == "udp" else HepTcpListener
            sources.append(kind(h.address, h.port, h.allowed_senders))
        for field, mirrors in (("tzsp_listeners", capture.tzsp_listeners),
                               ("vxlan_listeners", capture.vxlan_listeners)):
            for i, m in enumerate(mirrors):
                setting, address = f"capture.{field}[{i}]", join_listen(m.address, m.port)
                sources.append(MirrorListener(m.protocol, m.address, m.port,
                                              m.allowed_senders, name=m.name))
    except OSError as exc:
        for s in sources:
            s.close()
        raise listen_error(exc, setting, address) from exc
    return MultiSource(sources)


def call_lifetime(record: CallRecord, idle_timeout_s: float) -> tuple[float, float]:
    """(start, end) of a call in packet timestamps: its INVITE or first media packet,
    to its end; a call that timed out may have lost its end among dropped packets, so
    it lasts ``idle_timeout_s`` (the media idle timeout) longer."""
    firsts = [d.stream.first_ts for d in record.directions]
    if record.invite_ts is not None:
        firsts.append(record.invite_ts)
    end = record.end_ts
    if record.end_reason == "timed_out":
        end += idle_timeout_s
    return (min(firsts) if firsts else record.end_ts), end


def listener_names(capture: CaptureConfig) -> list[str]:
    """The listeners' names (``hep:PORT``, a mirror listener's name, ``tzsp:PORT``)."""
    return [*(h.label for h in capture.hep_listeners),
            *(m.label for m in (*capture.tzsp_listeners, *capture.vxlan_listeners))]


def source_names(capture: CaptureConfig) -> list[str]:
    """The names the sources' stats carry: interfaces, then the listeners (``hep:PORT``,
    ``hep-tcp:PORT``, a mirror listener's name or ``tzsp:PORT`` / ``vxlan:PORT``): the
    bounded ``interface`` label of the capture metrics, ``listener`` of the mirror ones."""
    return [*capture.interfaces, *listener_names(capture)]


def open_ring(capture: CaptureConfig) -> PacketSource:
    """The live capture: AF_PACKET ring on Linux, the scapy fallback elsewhere."""
    kwargs: dict[str, Any] = {
        "block_size": capture.block_size, "block_count": capture.block_count,
        "block_timeout_ms": capture.block_timeout_ms, "promisc": capture.promisc,
        "snaplen": capture.snaplen, "filter": capture.bpf, "sip_ports": kept_ports(capture),
        "skip_udp_ports": capture.listener_udp_ports(),
    }
    if sys.platform.startswith("linux"):
        source: PacketSource = AfPacketSource(capture.interfaces, **kwargs)
        return source
    print("voipprobe: warning: AF_PACKET unavailable; capturing with scapy (slower)",
          file=sys.stderr)
    source = ScapySource(capture.interfaces, **kwargs)
    return source


def open_hep_out(config: Config) -> HepOut:
    """HEP out to the configured collectors, its sender threads started (a collector
    that is down is retried with backoff: it never stops the probe)."""
    hep = HepOut(config.hep_out.collectors)
    hep.start()
    return hep


def open_call_log(config: Config) -> CallSink:
    """The configured call log, pseudonymising as ``privacy`` says (the key is created
    once in ``state_dir``; ``clear`` needs none). Raise `PrivacyError` for a key that
    cannot be read or created, `OSError` for a call log that cannot be opened."""
    key = b"" if config.privacy == "clear" else load_or_create_key(config.state_dir)
    return CallLog(config.call_log.target, config.call_log.format,
                   Pseudonymiser(config.privacy, key, config.addresses))


def load_web(config: Config, err: IO[str] | None = None) -> WebSettings:
    """The web config ``exporter.web_config`` names (none: plain HTTP, no
    authentication); its warnings go to ``err``. Raises `ConfigError`."""
    if config.exporter.web_config is None:
        return PLAIN
    web = load_web_config(config.exporter.web_config)
    for note in web.notes:
        print(f"voipprobe: warning: {web.source}: {note}", file=err or sys.stderr)
    return web


@dataclass(slots=True)
class Exporter:
    """The metrics collector and the HTTP server serving it."""

    metrics: ProbeMetrics
    server: MetricsServer
    recent: RecentCalls | None = None  # what /calls shows

    def reload(self, config: Config) -> None:
        """Re-read the web config (SIGHUP); a bad one raises `ConfigError` and the
        running one keeps serving."""
        self.server.set_web(load_web(config))

    def close(self) -> None:
        self.server.stop()


def start_exporter(config: Config, health: HealthCheck, web: WebSettings = PLAIN) -> Exporter:
    """ProbeMetrics on the default registry, served on ``exporter.listen`` with ``web``."""
    from prometheus_client import REGISTRY

    metrics = ProbeMetrics(REGISTRY, site=config.exporter.site, config=config)
    metrics.set_interfaces(source_names(config.capture))
    metrics.config_reloaded(True, time.time())
    recent = RecentCalls(config.exporter.recent_calls)
    server = MetricsServer(REGISTRY, health, web, recent=recent)
    try:
        server.start(config.exporter.host, config.exporter.port)
    except OSError as exc:
        raise listen_error(exc, "exporter.listen", config.exporter.listen) from exc
    warning = exposure_warning(config.exporter.host, web)
    if warning is not None:
        print(f"voipprobe: warning: {warning}", file=sys.stderr)
    return Exporter(metrics, server, recent)


def run(
    config: Config,
    *,
    config_path: str | Path | None,
    overrides: Sequence[Override] = (),
) -> int:
    """``voipprobe run``: capture until SIGTERM/SIGINT; returns the exit code (0).

    ``config_path`` is re-read on SIGHUP with the same ``overrides`` (environment,
    flags) over it; None means built-in defaults, which a reload keeps."""

    def load() -> Config:
        if config_path is None:
            from agent.config import config_from_mapping

            return config_from_mapping({}, "<defaults>", overrides)
        return load_config(config_path, overrides)

    web = load_web(config)  # before the capture opens: a bad file fails at once
    call_log = open_call_log(config)  # a bad key or log path stops us before capture starts
    try:
        source = open_source(config.capture)
    except OSError:
        call_log.close()
        raise
    daemon_ref: list[Daemon] = []

    def healthy() -> tuple[bool, Mapping[str, Any]]:
        if not daemon_ref:
            return False, {"state": "starting"}
        return daemon_ref[0].health()

    try:
        exporter = start_exporter(config, healthy, web)
    except OSError:
        source.close()
        call_log.close()
        raise
    daemon = Daemon(
        config, source=source, metrics=exporter.metrics, call_log=call_log,
        load=load, open_call_log=open_call_log, open_source=open_source,
        reload_exporter=exporter.reload,
        watchdog_s=sdnotify.watchdog_interval_s(), recent=exporter.recent,
    )
    daemon_ref.append(daemon)
    daemon.install_signal_handlers()
    print(f"voipprobe: {startup_line(config, web, config_path)}", file=sys.stderr, flush=True)
    tune_gc()  # everything is loaded: what the loop allocates is nearly all short-lived
    try:
        daemon.serve()
    except PermissionError as exc:  # an interface that appeared after start, no CAP_NET_RAW
        raise capture_error(exc, daemon.config.capture.interfaces) from exc
    finally:
        exporter.close()
    return 0

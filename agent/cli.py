"""Command line: ``voipprobe run | analyze | check-config | version``.

Exit codes: 0 success, 2 unusable input or usage error (argparse's own code),
1 an internal error (a bug: report it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from agent import __version__

# Each command imports what it uses, where it uses it: `version` and argument errors
# must not pay for numpy, pydantic and the engine (start-up, bench/startup.py).
if TYPE_CHECKING:
    from agent.calls.events import Event
    from agent.calls.record import CallRecord
    from agent.config import Config, Override
    from agent.engine import Engine
    from agent.export.evidence import EvidenceWriter
    from agent.rtp.model import StreamStats

EXIT_OK = 0
EXIT_BAD_INPUT = 2

SAMPLE_CAPTURE = "sample.pcap.gz"


def bundled_sample() -> Path:
    """Path of the capture shipped with the package (used when analyze gets no FILE)."""
    from importlib import resources

    return Path(str(resources.files("agent") / "data" / SAMPLE_CAPTURE))


class Progress:
    """A one-line progress indicator on a terminal; silent elsewhere."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self._last = 0.0

    def update(self, name: str, done: int, total: int, packets: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.25:
            return
        self._last = now
        pct = 100.0 * done / total if total else 0.0
        self.stream.write(f"\r{name}: {pct:5.1f}%  {packets:,} packets")
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


@dataclass(slots=True)
class Analysis:
    """What `analyze_files` kept: the events the sink did not consume."""

    streams: list[StreamStats] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    engine: Engine | None = None
    code: int = EXIT_OK

    def keep(self, event: Event) -> None:
        from agent.calls.events import CallEnded, StreamEnded

        if isinstance(event, StreamEnded):
            self.streams.append(event.stats)
        elif isinstance(event, CallEnded):
            self.calls.append(event.record)


def analyze_files(
    paths: Sequence[Path],
    progress: Progress,
    err: TextIO,
    config: Config | None = None,
    sink: Callable[[Event], None] | None = None,
    evidence: EvidenceWriter | None = None,
) -> Analysis:
    """Run every file through one engine, in the order given (a rotated capture set
    continues across files). Each event goes to ``sink`` as it happens (so a long
    capture's records need not be held), else it is kept, sorted, in the result."""
    from agent.calls.events import CallEnded
    from agent.capture.pcapfile import CaptureFormatError, open_capture
    from agent.config import default_config
    from agent.engine import Engine, EngineConfig
    from agent.os_errors import reason
    from agent.sip.events import EndReason

    engine = Engine(EngineConfig(config=config or default_config()))
    result = Analysis(engine=engine)
    keep = sink or result.keep

    def emit(event: Event) -> None:
        if evidence is not None and isinstance(event, CallEnded):
            event = evidence.process(event)  # the record names its pcap
        keep(event)

    for path in paths:
        try:
            with open_capture(path) as reader:
                for batch in reader:
                    for event in engine.feed(batch):
                        emit(event)
                    done, total = reader.progress()
                    progress.update(path.name, done, total, engine.packets)
                for warning in reader.warnings:
                    progress.clear()
                    print(f"voipprobe: warning: {path}: {warning}", file=err)
        except CaptureFormatError as exc:  # its message names the file
            progress.clear()
            print(f"voipprobe: error: {exc}", file=err)
            result.code = EXIT_BAD_INPUT
        except OSError as exc:
            progress.clear()
            print(f"voipprobe: error: {path}: {reason(exc)}", file=err)
            result.code = EXIT_BAD_INPUT
    for event in engine.finish(EndReason.CAPTURE_END):
        emit(event)
    progress.clear()
    result.streams.sort(key=lambda s: (s.first_ts, s.key))
    result.calls.sort(key=lambda c: (c.invite_ts if c.invite_ts is not None else c.end_ts))
    return result


def _nothing_read(a: Analysis) -> bool:
    """Every file failed before a packet was read."""
    return a.code != EXIT_OK and (a.engine is None or a.engine.packets == 0)


def _fmt_ms(v: float) -> str:
    return f"{v:.2f}"


def stream_table(streams: Iterable[StreamStats]) -> str:
    """The human-readable stream table of ``analyze``."""
    header = (
        "src", "dst", "ssrc", "codec", "pkts", "lost", "lost%", "dup", "reord",
        "jit ms", "jit max", "max Δ ms", "dscp", "vlan", "dur s",
    )
    rows: list[tuple[str, ...]] = [header]
    for s in streams:
        marks = sorted(s.dscp.items())
        dscp = ",".join(str(k) if len(marks) == 1 else f"{k}:{v}" for k, v in marks)
        codec = s.codec or "PT" + "/".join(str(p) for p in s.payload_types)
        if s.clock_rate_estimated:
            codec += "?"
        rows.append((
            s.key.src, s.key.dst, f"0x{s.key.ssrc:08X}", codec, str(s.packets), str(s.lost),
            f"{100 * s.loss_ratio:.2f}", str(s.duplicates), str(s.reordered),
            _fmt_ms(s.jitter_mean_ms), _fmt_ms(s.jitter_max_ms), f"{s.max_delta_ms:.1f}",
            dscp, "-" if s.vlan is None else str(s.vlan), f"{s.last_ts - s.first_ts:.1f}",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    numeric = set(range(4, 15)) - {12}
    lines = []
    for r in rows:
        cells = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _load_analyzer() -> None:
    """Import the modules `analyze` runs, with the cyclic garbage collector off.

    Loading them is most of analyze's start-up, and what it allocates (modules,
    classes, functions) lives as long as the process: the ~100 collections it set
    off cost 20-50 ms and found nothing to free. Once loaded, the collector is set as
    the agent's is (`agent.gctune`: what is loaded frozen, cyclic garbage collected
    less often).

    numpy's OpenBLAS starts a thread per core when it loads, and they spin a while
    waiting for work; the probe does no floating-point linear algebra (its one matmul
    is on integers, which BLAS does not do), so one thread: ~0.1 s less CPU at start-up
    on two cores, left to the admin's own setting when there is one."""
    import gc

    from agent.gctune import tune_gc

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    gc.disable()
    try:
        import agent.calls.events
        import agent.calls.table_text
        import agent.capture.pcapfile
        import agent.config
        import agent.engine  # noqa: F401

        # Frozen before the collector is back on: what the imports allocated (~60,000
        # objects) would otherwise be traversed by the first young collection (~20 ms,
        # nothing found); gc.freeze also zeroes the young generation's count.
        tune_gc()
    finally:
        gc.enable()


def cmd_analyze(args: argparse.Namespace) -> int:
    _load_analyzer()
    from agent.config import ConfigError, default_config, load_config

    err: TextIO = sys.stderr
    config = None
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"voipprobe: error: {exc}", file=err)
            return EXIT_BAD_INPUT
    writer = None
    if args.evidence:  # violated calls' pcaps (every call's with evidence.every_call)
        base = config or default_config()
        ev = base.evidence.model_copy(update={"enabled": True})
        config = base.model_copy(update={"evidence": ev})
        from agent.export.evidence import EvidenceWriter

        writer = EvidenceWriter(ev, Path(args.evidence), lambda call_id: call_id)
    try:
        return _analyze(args, config, writer)
    finally:
        if writer is not None:
            s = writer.stats
            print(f"voipprobe: {s.written} evidence pcap(s) written to {args.evidence}"
                  + (f", {s.write_errors} write error(s)" if s.write_errors else ""),
                  file=err)


def _analyze(args: argparse.Namespace, config: Config | None,
             writer: EvidenceWriter | None) -> int:
    import json

    from agent.calls.events import CallEnded, StreamEnded
    from agent.calls.table_text import call_rows, format_rows

    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    paths = [Path(p) for p in args.files] or [bundled_sample()]
    if not args.files:
        print(f"voipprobe: no FILE given; analysing the bundled sample {paths[0]}", file=err)
    progress = Progress(err, enabled=not args.no_progress)
    if args.json:
        # Records are written as they end: memory stays flat however long the capture.
        def write(event: Event) -> None:
            if isinstance(event, CallEnded):
                out.write(json.dumps(event.record.to_json(), separators=(",", ":")) + "\n")
            elif isinstance(event, StreamEnded) and args.streams:
                out.write(json.dumps(event.stats.to_json(), separators=(",", ":")) + "\n")
            counts[type(event).__name__] += 1

        counts: Counter[str] = Counter()
        a = analyze_files(paths, progress, err, config, sink=write, evidence=writer)
        assert a.engine is not None
        summary = {"kind": "summary", "files": [str(p) for p in paths],
                   "calls": counts["CallEnded"], "streams": counts["StreamEnded"]}
        summary.update(a.engine.snapshot().totals)
        out.write(json.dumps(summary, separators=(",", ":")) + "\n")
        return a.code
    if args.streams:
        a = analyze_files(paths, progress, err, config, evidence=writer)
        assert a.engine is not None
        if a.streams:
            out.write(stream_table(a.streams) + "\n")
        if not _nothing_read(a):
            out.write(f"\n{a.engine.packets:,} packets, {len(a.streams)} RTP streams\n")
        return a.code
    # The calls table keeps only each call's text rows, not its record.
    rows: list[tuple[float, list[tuple[str, ...]]]] = []
    counts = Counter[str]()

    def keep_rows(event: Event) -> None:
        if isinstance(event, CallEnded):
            c = event.record
            rows.append((c.invite_ts if c.invite_ts is not None else c.end_ts, call_rows(c)))
            counts["signalled" if c.call_id is not None else "unsignalled"] += 1
        elif isinstance(event, StreamEnded):
            counts["streams"] += 1

    a = analyze_files(paths, progress, err, config, sink=keep_rows, evidence=writer)
    assert a.engine is not None
    rows.sort(key=lambda r: r[0])
    if rows:
        out.write(format_rows(row for _, rs in rows for row in rs) + "\n")
    if _nothing_read(a):  # the error said it all; "0 packets" would add nothing
        return a.code
    out.write(f"\n{a.engine.packets:,} packets, {counts['signalled']} calls, "
              f"{counts['unsignalled']} unsignalled media, {counts['streams']} RTP streams\n")
    return a.code


DEFAULT_CONFIG = "/etc/voipprobe/config.yaml"


def flag_overrides(args: argparse.Namespace) -> list[Override]:
    """The settings given as flags (they win over the file and the environment)."""
    from agent.config import Override

    out = []
    if args.interface:
        out.append(Override("capture.interfaces", list(args.interface), "--interface"))
    if args.listen is not None:
        out.append(Override("exporter.listen", args.listen, "--listen"))
    if args.call_log is not None:
        out.append(Override("call_log.target", args.call_log, "--call-log"))
    if args.web_config_file is not None:
        out.append(Override("exporter.web_config", args.web_config_file, "--web.config.file"))
    return out


def effective_config(
    args: argparse.Namespace, err: TextIO
) -> tuple[Config, str | None, list[Override]]:
    """Defaults < file < VOIPPROBE_* environment < flags. Returns the config, the file
    it came from (None: built-in defaults) and the overrides (re-applied on reload).

    With no --config, a missing default file means built-in defaults (said on stderr);
    a missing file given explicitly is an error."""
    from agent.config import config_from_mapping, env_overrides, load_config

    overrides = env_overrides(os.environ) + flag_overrides(args)
    path: str | None = args.config
    if path is None:
        if not Path(DEFAULT_CONFIG).exists():
            print(f"voipprobe: {DEFAULT_CONFIG} not found; using built-in defaults", file=err)
            return config_from_mapping({}, "<defaults>", overrides), None, overrides
        path = DEFAULT_CONFIG
    return load_config(path, overrides), path, overrides


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--interface", action="append", metavar="IFACE",
                   help="capture on IFACE (repeatable; 'any' for all); overrides "
                   "capture.interfaces")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="Prometheus exporter address; overrides exporter.listen")
    p.add_argument("--call-log", metavar="PATH|-",
                   help="call log file, or - for stdout; overrides call_log.target")
    p.add_argument("--web.config.file", dest="web_config_file", metavar="PATH",
                   help="Prometheus exporter-toolkit web config (TLS, basic auth); "
                   "overrides exporter.web_config")


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent.config import ConfigError

    try:
        config, _path, _overrides = effective_config(args, sys.stderr)
        if config.exporter.web_config is not None:
            from agent.export.webconfig import load_web_config

            load_web_config(config.exporter.web_config)
    except ConfigError as exc:
        print(f"voipprobe: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(config.to_yaml())
    return EXIT_OK


def cmd_lookup(args: argparse.Namespace) -> int:
    """The pseudonyms the call log shows for clear Call-IDs, numbers, URIs or addresses,
    made with the agent's own key (read from ``state_dir``, never created here)."""
    from agent.config import ConfigError
    from agent.export.privacy import KEY_FILE, PrivacyError, Pseudonymiser, read_key

    try:
        config, _path, _overrides = effective_config(args, sys.stderr)
        if config.privacy == "clear":
            print("voipprobe: privacy is clear: the call log shows values as they are",
                  file=sys.stderr)
            key = b""
        else:
            key = read_key(config.state_dir)
        p = Pseudonymiser(config.privacy, key, config.addresses)
    except FileNotFoundError:
        print(f"voipprobe: error: no {KEY_FILE} in {config.state_dir} (state_dir): the "
              "agent has not pseudonymised anything with this config", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ConfigError, PrivacyError) as exc:
        print(f"voipprobe: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for value in args.values:
        shown = {"call-id": p.call_id, "address": p.address}.get(args.kind, p.uri)(value)
        print(f"{value}\t{shown}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from agent.config import ConfigError
    from agent.daemon import run  # the live agent's imports are not needed by analyze

    try:
        config, path, overrides = effective_config(args, sys.stderr)
    except ConfigError as exc:
        print(f"voipprobe: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from agent.export.privacy import PrivacyError

    try:
        return run(config, config_path=path, overrides=overrides)
    except (ConfigError, OSError, PrivacyError) as exc:  # ConfigError: the web config
        print(f"voipprobe: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voipprobe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"voipprobe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("analyze", help="measure and judge the calls in capture files")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="pcap/pcapng files (gzip ok), read in the order given "
                   "(default: the bundled sample)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--streams", action="store_true",
                   help="the RTP stream table; with --json, stream objects after the calls")
    p.add_argument("--config", metavar="PATH",
                   help="YAML config: SLA profiles, local networks, peers, quality model")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("--evidence", metavar="DIR",
                   help="write a pcap of each SLA-violating call's SIP and RTP/RTCP headers "
                        "(no audio) into DIR")
    p.set_defaults(func=cmd_analyze)
    r = sub.add_parser("run", help="capture live and export metrics and call records")
    r.add_argument("--config", metavar="PATH",
                   help=f"YAML config (default {DEFAULT_CONFIG}; built-in defaults if "
                   "that file does not exist)")
    _add_config_flags(r)
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("check-config",
                       help="validate a config and print the effective settings as YAML")
    c.add_argument("config", nargs="?", metavar="PATH",
                   help=f"the file to check (default {DEFAULT_CONFIG})")
    _add_config_flags(c)
    c.set_defaults(func=cmd_check_config)
    lk = sub.add_parser("lookup", help="print the pseudonym the call log shows for a "
                        "clear Call-ID, number, URI or address")
    lk.add_argument("values", nargs="+", metavar="VALUE")
    lk.add_argument("--kind", choices=("call-id", "party", "address"), default="party",
                    help="what VALUE is (default party: a number or a SIP/tel URI)")
    lk.add_argument("--config", metavar="PATH",
                    help=f"YAML config (default {DEFAULT_CONFIG}): privacy, state_dir")
    lk.set_defaults(func=cmd_lookup, interface=None, listen=None, call_log=None,
                    web_config_file=None)
    v = sub.add_parser("version", help="print the version")
    v.set_defaults(func=lambda _a: print(f"voipprobe {__version__}") or EXIT_OK)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Cross-check of the HEP decoder against a real HEP dissector, run by hand.

sipcapture/hep-wireshark's ``hep.lua`` loaded into tshark decodes the corpus HEP
captures and the wiki G.711 capture re-encoded as HEP v3, v3+zlib and v2; every HEP
packet's addresses, ports, time, capture id and transport must equal `parse_hep`'s.
The Lua file is a third party's and is not in this repository (nor in CI), so this
is not a test of the suite:

    HEP_LUA=/path/to/hep-wireshark/lua/hep.lua .venv/bin/python tests/decode/hep_lua_check.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from corpus_oracle import corpus_dir  # noqa: E402
from hepbuild import hep_capture  # noqa: E402
from test_hep import _addr, _udp_payloads  # noqa: E402

from agent.decode.hep import parse_hep  # noqa: E402

LUA_FIELDS = {3: ("source_ipv4_address", "destination_ipv4_address", "source_port",
                  "destination_port", "timestamp_unix", "timestamp_microsec",
                  "capture_node_id", "transport_layer_protocol"),
              2: ("source_ip_address", "destination_ip_address", "source_port",
                  "destination_port", "timestamp_unix", "timestamp_microsec",
                  "capture_node_id", "transport_layer_protocol")}


def _lua_rows(path: Path, version: int, lua: str) -> list[list[str]]:
    args = ["tshark", "-n", "-X", f"lua_script:{lua}", "-r", str(path), "-T", "fields"]
    for name in LUA_FIELDS[version]:
        args += ["-e", f"hep{version}.{name}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines()]


def check(source: str, tmp_path: Path, lua: str) -> None:
    if source.startswith("hep3"):
        path = corpus_dir() / "pcaps" / source
    else:
        path = hep_capture(corpus_dir() / "pcaps" / "wiki_SIP_CALL_RTP_G711.pcap",
                            tmp_path / "hep.pcap", source)
    version = 2 if source == "v2" else 3
    rows = _lua_rows(path, version, lua)
    payloads = _udp_payloads(path)
    assert len(rows) == len(payloads) > 0
    for row, (_, raw) in zip(rows, payloads, strict=True):
        rec = parse_hep(raw)
        assert row == [_addr(rec.src), _addr(rec.dst), str(rec.sport), str(rec.dport),
                       str(rec.ts_sec), str(rec.ts_usec), str(rec.capture_id),
                       {17: "UDP", 6: "TCP"}[rec.ip_proto]]




def main() -> int:
    lua = os.environ.get("HEP_LUA")
    if not lua or not Path(lua).is_file():
        print("set HEP_LUA to hep-wireshark's lua/hep.lua", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        for source in ("hep3_sip.pcap", "hep3_compressed.pcapng", "v3", "zlib", "v2"):
            check(source, Path(tmp), lua)
            print(f"{source}: every HEP packet agrees with hep.lua")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""HTTP/1.1 request heads (RFC 9112 §2-5) for the exporter's server, and what a page
returns. Only what a scraper sends is accepted: GET or HEAD of a path, header fields
without bodies; the rest gets the status that says why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Request:
    method: str  # GET or HEAD
    path: str  # without the query
    query: str
    headers: Mapping[str, str]  # lower-case names
    peer: str
    keep_alive: bool = True  # HTTP/1.1 without "Connection: close"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")  # RFC 9110 tchar


def parse_head(head: bytes, max_headers: int, peer: str) -> Request | tuple[int, str]:
    """A request head (without its blank line) -> its Request, or (status,
    reason) for a head the server refuses (RFC 9112 §3, §5)."""
    text = head.decode("latin-1")
    request_line, *header_lines = text.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= TOKEN_CHARS:
        return 400, "malformed request line"
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        return 505, "HTTP/1.1 only"
    if not target.startswith("/"):
        return 400, "request target must be a path"
    if len(header_lines) > max_headers:
        return 431, "too many header fields"
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or not set(name) <= TOKEN_CHARS:  # also obs-fold (§5.2)
            return 400, "malformed header field"
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        return 413, "request bodies are not accepted"
    if method not in ("GET", "HEAD"):
        return 405, "only GET and HEAD"
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = version == "HTTP/1.1" and "close" not in tokens
    path, _, query = target.partition("?")
    return Request(method, path, query, headers, peer, keep_alive)

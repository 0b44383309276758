"""RTP stream detection and per-stream RFC 3550 statistics."""

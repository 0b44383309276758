"""Calls: SIP dialogs, RTP streams and RTCP joined into judged call records."""

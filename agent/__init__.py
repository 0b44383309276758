"""voipprobe: passive VoIP call-quality probe (import package ``agent``)."""

__version__ = "0.1.0"

"""Call quality: G.107 E-model, codec impairments, loss burstiness, jitter-buffer emulation.

Pure library code (no I/O). Entry point: :func:`agent.quality.model.compute_quality`.
"""

"""The pure usage path: SSE decoding, per-endpoint extractors, token estimation and taps."""

"""The meter and the pure usage path: SSE decoding, per-endpoint extractors, token estimation,
taps, dedupe of retrievals, and turning an exchange into a priced ledger record."""

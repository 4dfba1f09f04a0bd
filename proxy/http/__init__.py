"""The HTTP edge: forwarding, headers, WebSocket relay, the proxy's own errors, health, and the
``Exchange`` / ``Tap`` seam that metering plugs into. Imports nothing from the other wings."""

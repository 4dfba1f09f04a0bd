"""The aiohttp proxy: forwarding, usage taps, metering, metrics, admin API, budgets, CLI."""

"""The aiohttp proxy, in wings: http (the edge), usage (the meter), teams, observe, admin; app.py wires them."""

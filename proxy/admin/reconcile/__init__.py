"""Does it match the bill? The ledger compared with OpenAI's Admin API Usage and Costs endpoints.

* :mod:`.shapes` -- the Admin API's page and result shapes, parsed and checked (pure);
* :mod:`.compare` -- the comparison per day x project x model and its explanations (pure);
* :mod:`.render` -- table / CSV / JSON (pure);
* :mod:`.client` -- the HTTP client (pagination, 429 Retry-After), through the configured upstream;
* :mod:`.run` -- one reconciliation: fetch both sides, compare (used by the CLI and the server);
* :mod:`.service` -- the server's schedule, ``GET /meter/reconcile`` and the gauges.
"""

"""The read side's HTTP face under ``/meter/*``: admin auth, spend and records, prices; the
report math shared with ``openai-meter report``."""

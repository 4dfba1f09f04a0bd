"""The ledger as FinOps FOCUS 1.2 cost-and-usage rows: :mod:`.columns` (the column list and the
values we fill), :mod:`.rows` (pure: aggregation, SKU split, exact cost allocation) and
:mod:`.write` (CSV, and Parquet through the optional ``pyarrow``)."""

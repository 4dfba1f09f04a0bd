"""The ledger: schema, migrations, the async writer with its spool, and report queries."""

"""Price catalog, model resolution and exact cost arithmetic. Imports nothing else of ours."""

"""The spend page (``GET /meter/``): server-rendered HTML over the shared read side."""

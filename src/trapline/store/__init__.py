"""The DuckDB store: schema, batched Arrow writer, raw archive and queries."""

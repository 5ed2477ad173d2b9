"""The DuckDB store: schema, batched Arrow writer, raw archive, routing snapshots, queries."""

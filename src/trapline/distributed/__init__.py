"""The ingest pipeline as a distributed job: the same functions, tasks placed by Spark."""

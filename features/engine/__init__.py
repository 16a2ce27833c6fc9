"""Engines that run the compiled point-in-time SQL besides the embedded DuckDB (today: Spark)."""

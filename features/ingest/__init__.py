"""Ingestion: validate deliveries against the source contract and load them into the warehouse.

A delivery is read in three steps, each set-based:

1. `reader`   a vectorised pre-pass over the raw bytes (numpy, block by block, bounded memory):
              encoding (UTF-8, or Thai TIS-620 / Windows-874 converted), binary content, absurdly
              long lines, the header, and the *physical* line number of every record (quoted fields
              may hold line breaks). Records of the wrong shape are quarantined here; the rest are
              written to a private copy whose first field is the record's line number.
2. `validate` every contract rule as SQL over the all-VARCHAR staging table in DuckDB.
3. `pipeline` identity vault first, then ONE warehouse transaction per delivery (all or nothing).

Public API: `features.ingest.pipeline.ingest_path`, `features.ingest.warehouse.connect`,
`features.ingest.warehouse.file_accounting`. Nothing here does work at import time.
"""

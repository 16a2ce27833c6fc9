"""The identity vault: the only place raw student IDs, names and exact birth dates are stored.

EWS_HOME/vault/identity.duckdb (folder 0700, file 0600):
  id_tokens(id_token PRIMARY KEY, student_id)   distinct normalised IDs and their keyed tokens
  name_records(delivery_id, source_file, source_line, source, id_token, prefix, first_name, last_name)
                                                names of every accepted row of a source with names
  birth_records(delivery_id, source_file, source_line, source, id_token, birth_date)
                                                the exact birth date of every accepted row that has
                                                one (the warehouse keeps only `birth_month`)
Linkage reads it to match people across systems; the school-facing service reads names for the
school's own students. Everything else works on tokens (and the birth month).
"""

from __future__ import annotations

import os

from features.home import EwsHome

VAULT_DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS {db}.id_tokens (id_token VARCHAR PRIMARY KEY, student_id VARCHAR NOT NULL)",
    """CREATE TABLE IF NOT EXISTS {db}.name_records (delivery_id VARCHAR, source_file VARCHAR,
        source_line BIGINT, source VARCHAR, id_token VARCHAR, prefix VARCHAR, first_name VARCHAR,
        last_name VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS {db}.birth_records (delivery_id VARCHAR, source_file VARCHAR,
        source_line BIGINT, source VARCHAR, id_token VARCHAR, birth_date DATE)""",
)


def prepare(home: EwsHome) -> None:
    """Create the owner-only vault folder (and scratch space inside it) before anything is written."""
    home.ensure()
    home.vault_tmp_dir.mkdir(exist_ok=True)
    os.chmod(home.vault_tmp_dir, 0o700)


def secure(home: EwsHome) -> None:
    """Owner-only permissions on the vault database and its write-ahead log."""
    for p in (home.vault, home.vault.with_name(home.vault.name + ".wal")):
        if p.exists():
            os.chmod(p, 0o600)

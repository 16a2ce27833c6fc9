"""Deliveries on disk: `delivery.json` plus `<source>.csv` files, found and ordered.

`ews ingest PATH` takes one delivery folder or a folder of delivery folders. Deliveries are
ingested in the order their rows became known (`delivered_on`); on the same day registry
deliveries (areas, schools) go first, because other sources' school and tambon codes are checked
against the registry; then by delivery_id, so the order never depends on the file system.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.contract import REGISTRY_SOURCES, SOURCES

MANIFEST = "delivery.json"
# Registry files first inside a delivery (schools reference areas), then the contract's order.
FILE_ORDER: tuple[str, ...] = ("areas", "schools", *(s for s in SOURCES if s not in REGISTRY_SOURCES))


class DeliveryRefused(Exception):
    """The whole delivery is refused; the warehouse is not touched. The message says why."""


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    delivery_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._\-]+$")
    system: str = Field(min_length=1, max_length=200)
    delivered_on: date


@dataclass(frozen=True)
class DeliveryFile:
    source: str
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Delivery:
    folder: Path
    manifest: Manifest
    manifest_bytes: bytes
    files: tuple[DeliveryFile, ...]  # in ingestion order

    @property
    def delivery_id(self) -> str:
        return self.manifest.delivery_id

    @property
    def is_registry(self) -> bool:
        return any(f.source in REGISTRY_SOURCES for f in self.files)

    def sort_key(self) -> tuple[date, int, str]:
        return (self.manifest.delivered_on, 0 if self.is_registry else 1, self.delivery_id)

    def manifest_sha256(self, file_hashes: dict[str, str]) -> str:
        """Identity of the delivery's content: delivery.json and every file's SHA-256."""
        h = hashlib.sha256()
        h.update(json.dumps(self.manifest.model_dump(mode="json"), sort_keys=True).encode())
        for name in sorted(file_hashes):
            h.update(f"\n{name}\t{file_hashes[name]}".encode())
        return h.hexdigest()


def load_delivery(folder: Path) -> Delivery:
    """Read and check one delivery folder (manifest and file names; not the files' content)."""
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise DeliveryRefused(f"{folder}: no {MANIFEST}; a delivery needs one naming delivery_id, system and delivered_on")
    raw = mpath.read_bytes()
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise DeliveryRefused(
            f"{mpath}: invalid ({problems}); expected "
            '{"delivery_id": "...", "system": "...", "delivered_on": "YYYY-MM-DD"}'
        ) from None
    found: dict[str, DeliveryFile] = {}
    unknown: list[str] = []
    for p in sorted(folder.iterdir()):
        if p.name == MANIFEST or p.name.startswith("."):
            continue  # hidden files (.DS_Store and the like) are not part of a delivery
        stem = p.name[:-4] if p.name.endswith(".csv") else None
        if p.is_file() and stem in SOURCES:
            found[stem] = DeliveryFile(stem, p)
        else:
            unknown.append(p.name)
    if unknown:
        raise DeliveryRefused(
            f"{folder}: unknown files {', '.join(unknown)}; a delivery holds only delivery.json and "
            f"files named after the contract's sources ({', '.join(s + '.csv' for s in SOURCES)})"
        )
    if not found:
        raise DeliveryRefused(f"{folder}: the delivery holds no CSV file of the contract")
    files = tuple(found[s] for s in FILE_ORDER if s in found)
    return Delivery(folder=folder, manifest=manifest, manifest_bytes=raw, files=files)


def discover(path: Path) -> tuple[list[Delivery], list[tuple[Path, str]]]:
    """One delivery folder, or every delivery folder directly inside `path`, in ingestion order,
    plus the folders refused before reading any data (folder, reason): one broken delivery does
    not hold back the others.

    Sub-folders without delivery.json are skipped unless they hold a contract CSV file (then
    they look like a delivery whose manifest is missing, which is refused)."""
    if not path.exists():
        raise DeliveryRefused(f"{path}: no such folder")
    if not path.is_dir():
        raise DeliveryRefused(f"{path}: not a folder; give a delivery folder or a folder of deliveries")
    if (path / MANIFEST).exists() or any((path / f"{s}.csv").exists() for s in SOURCES):
        return [load_delivery(path)], []
    deliveries: list[Delivery] = []
    refused: list[tuple[Path, str]] = []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (sub / MANIFEST).exists() or any((sub / f"{s}.csv").exists() for s in SOURCES):
            try:
                deliveries.append(load_delivery(sub))
            except DeliveryRefused as exc:
                refused.append((sub, str(exc)))
    if not deliveries and not refused:
        raise DeliveryRefused(f"{path}: no delivery found (a folder with {MANIFEST} and CSV files)")
    ids: dict[str, Path] = {}
    for d in deliveries:
        if d.delivery_id in ids:
            raise DeliveryRefused(
                f"delivery_id {d.delivery_id} appears twice: {ids[d.delivery_id]} and {d.folder}"
            )
        ids[d.delivery_id] = d.folder
    return sorted(deliveries, key=Delivery.sort_key), refused

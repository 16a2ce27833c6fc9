"""A registered model version and where it came from: the one type every stage passes around.

Training registers versions (`training.registry`), serving scores with one and writes its number
into each round's snapshot, monitoring reads it back. MLflow hands versions over as strings and a
snapshot manifest stores them as text; `ModelVersion.parse` is the one place text becomes a version,
and `str(version)` the one place it becomes text again.
"""

from __future__ import annotations

from dataclasses import dataclass


class ModelVersion(int):
    """A version number of the registered model (1, 2, ...). An int, so it sorts and compares as
    one; its text form is the plain number MLflow and the snapshot manifests use."""

    def __new__(cls, value: int | str) -> ModelVersion:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(f"a model version is a whole number, not {type(value).__name__}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"model version {value!r} is not a whole number") from None
        if number < 1:
            raise ValueError(f"model version {value!r}: versions start at 1")
        return super().__new__(cls, number)

    @classmethod
    def parse(cls, value: int | str) -> ModelVersion:
        """A version from MLflow, a manifest, a URL or the command line (clear error if it is none)."""
        return value if isinstance(value, ModelVersion) else cls(value)

    def __repr__(self) -> str:
        return f"ModelVersion({int(self)})"

    def __str__(self) -> str:
        return str(int(self))


@dataclass(frozen=True)
class ModelLineage:
    """Where a registered version came from: what a snapshot records beside its scores."""

    name: str
    version: ModelVersion
    run_id: str
    trainset_name: str
    trainset_fingerprint: str = ""
    trainset_delivery_fingerprint: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def manifest_fields(self) -> dict[str, str]:
        """The lineage keys of a round snapshot's manifest (text, as the manifest has always held them)."""
        return {
            "model_name": self.name, "model_version": str(self.version), "run_id": self.run_id,
            "trainset_name": self.trainset_name, "trainset_fingerprint": self.trainset_fingerprint,
            "trainset_delivery_fingerprint": self.trainset_delivery_fingerprint,
        }

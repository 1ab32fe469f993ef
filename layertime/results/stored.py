"""One row of the run store (:mod:`layertime.store`): a run's configuration, status and
result JSON, as the store keeps them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StoredRun:
    """One row of the store."""

    id: int
    kind: str
    model: str
    batch_size: int | None
    device: str | None
    status: str
    created: str
    config: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    sweep_id: int | None
    config_key: str | None
    host: str | None

    def summary(self) -> dict[str, Any]:
        """The fields ``layertime runs --json`` lists."""
        return {
            "id": self.id,
            "kind": self.kind,
            "model": self.model,
            "batch_size": self.batch_size,
            "device": self.device,
            "status": self.status,
            "created": self.created,
            "sweep_id": self.sweep_id,
            "host": self.host,
            "error": self.error,
        }

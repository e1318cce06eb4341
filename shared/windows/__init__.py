"""Maintenance windows: the model (model.py), when they are and whom they cover (schedule.py: `Windows`, the
interface the engine's gate calls), and their storage service (service.py: what the API and the CLI call)."""

from shared.windows.model import MaintenanceWindow, parse
from shared.windows.schedule import Occurrence, Windows

__all__ = ["MaintenanceWindow", "Occurrence", "Windows", "parse"]

"""Ferry's shared package: everything the producer, the workers, the CLI and client apps have in common."""

from shared.client import Client
from shared.errors import FerryError
from shared.objects.ref import ObjectRef
from shared.schedules import schedule
from shared.settings import Settings, get_settings
from shared.tasks import Array, task

__all__ = ["Array", "Client", "FerryError", "ObjectRef", "Settings", "get_settings", "schedule", "task"]

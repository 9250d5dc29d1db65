"""digest: a self-hosted newsletter digest builder and sender."""

from .config import Settings, load_settings
from .errors import DigestError

__all__ = ["DigestError", "Settings", "__version__", "load_settings"]

__version__ = "0.1.0"

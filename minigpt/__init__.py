"""minigpt: a small GPT, one shared trunk, three domain crowns and a router (Chapter 32 companion)."""
__version__ = "0.1.0"

from .config import GPTConfig, Profile, get_profile  # noqa: E402,F401
from .model import GPT  # noqa: E402,F401

"""minigpt: a small GPT, one shared trunk, three domain crowns and a router (Chapter 32 companion)."""
from .config import GPTConfig, Profile, __version__, get_profile  # noqa: F401
from .model import GPT  # noqa: F401

"""minigpt: a small GPT, one shared trunk, three domain crowns and a router (Chapter 32 companion)."""
from .heap import fix_mmap_threshold

fix_mmap_threshold()  # first, before any tensor: a long study's heap would fragment (minigpt/heap.py)

from .config import GPTConfig, Profile, __version__, get_profile  # noqa: E402, F401
from .model import GPT  # noqa: E402, F401

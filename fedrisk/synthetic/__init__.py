"""The synthetic SME world: firms, hidden factors, a trading graph, defaults, and each data holder's view."""

from fedrisk.synthetic.config import WorldConfig
from fedrisk.synthetic.world import World, generate_world

__all__ = ["World", "WorldConfig", "generate_world"]

"""The synthetic SME world: firms, hidden factors, a trading graph, defaults, and each data holder's view."""

from fedrisk.config.world import WorldConfig
from fedrisk.data.synthetic.world import World, generate_world

__all__ = ["World", "WorldConfig", "generate_world"]

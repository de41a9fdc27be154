"""fedrisk: simulate federated learning for SME credit risk on Flower."""

from fedrisk.core.env import configure_flower_environment

__version__ = "0.1.0"

configure_flower_environment()

__all__ = ["__version__"]

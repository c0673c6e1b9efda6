"""The spiking low-rank memory (a reconstruction of Podlaski & Machens 2024) and its two reads."""

from .engines import LatentBox, SpikingNetwork, retrieve_latent, retrieve_spiking, sign_pattern
from .memory import RULES, SpikingLowRankMemory, learning_rule

__all__ = ["SpikingLowRankMemory", "learning_rule", "RULES", "LatentBox", "SpikingNetwork", "retrieve_latent",
           "retrieve_spiking", "sign_pattern"]

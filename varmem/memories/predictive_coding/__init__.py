"""Predictive-coding memories: hierarchical Gaussian networks that store items in their weights.

:class:`PredictiveCodingMemory` (GPCN, Salvatori et al. 2021) and :class:`BayesPCN` (Yoo & Wood
2022) share the network of :mod:`.network` (energy, hand-written gradient, fused relaxation, Pyro
model) and its readers ``pc`` / ``pc_pyro`` (:mod:`.readers`).  :class:`PCNet` (:mod:`.composition`)
builds a predictive-coding network from layers (dense, convolution, transposed convolution;
Gaussian or Bernoulli nodes; any ``torch.optim`` optimiser for activities and weights);
BayesPCN's layers are :class:`ConjugateDense` layers (:mod:`.conjugate`) of such a network, and
:class:`PCNetMemory` (:mod:`.pc_memory`) makes one a varmem memory (write / read ``"pcnet"`` / energy /
Pyro model / save-load).
"""

from .bayes_pcn import BayesPCN
from .composition import Conv2d, ConvTranspose2d, Dense, FitRecord, PCNet
from .conjugate import ConjugateDense
from .gpcn import PredictiveCodingMemory
from .network import ACTIVATIONS, PCNetwork
from .pc_memory import PCNetMemory, PCNetReadable
from .readers import PCReadable

__all__ = ["BayesPCN", "PredictiveCodingMemory", "PCNetwork", "PCReadable", "ACTIVATIONS", "PCNet", "Dense",
           "Conv2d", "ConvTranspose2d", "FitRecord", "ConjugateDense", "PCNetMemory", "PCNetReadable"]

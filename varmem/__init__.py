"""varmem: associative memories as Pyro generative models; remembering is inference.

A memory is ``p(x, z | M) = p(z | M) p(x | z)``: writing changes the prior over the clean item
``z``; reading infers ``z`` from a corrupted or partial cue ``x``.

* probabilistic memories (``varmem.memories``): :class:`KernelDensityMemory`,
  :class:`NonparametricMemory`, :class:`LatentMemory`, :class:`PredictiveCodingMemory`,
  :class:`BayesPCN`, :class:`DiffusionMemory` (read by reverse-time diffusion);
  :class:`BayesPCN`, :class:`SparseRecoveryMemory` (ℓ1 decoding in a learned subspace);
* baselines on the same protocol (``varmem.baselines``): classical, dense and modern Hopfield
  networks, random-feature, kernelized and correlated dense memories, BayesPCN's mixture baseline;
* retrieval engines (``varmem.inference``), training (:func:`fit`), ArviZ conversion
  (:func:`to_inference_data`), safe checkpoints (:func:`save` / :func:`load`), and the workbench
  (``datasets``, ``corruptions``, ``metrics``).
"""

from . import (
    capabilities,
    corruptions,
    datasets,
    domains,
    engine,
    evidence,
    helpers,
    inference,
    metrics,
    models,
    validation,
)
from ._version import __version__
from .analysis import to_inference_data
from .baselines import (
    NTM,
    ClassicalHopfield,
    CorrelatedDenseMemory,
    DenseAssociativeMemory,
    KernelizedHopfield,
    MemN2N,
    MixtureHopfieldMemory,
    ModernHopfield,
    RandomFeatureMemory,
    SpikingLowRankMemory,
    encode_codes,
    normalize_patterns,
)
from .checkpoint import CheckpointError, load, register_checkpoint_class, save
from .comparison import Contender, compare
from .distributions import KernelDensity, Mixture
from .evidence import Evidence
from .indexed import IndexedMemory
from .memories import (
    BayesPCN,
    DiffusionMemory,
    EntropicHeteroMemory,
    EntropicMemory,
    FiringRateMemory,
    KernelDensityMemory,
    KernelDensityPosterior,
    LatentMemory,
    NonparametricMemory,
    NonparametricPosterior,
    PredictiveCodingMemory,
    SparseRecoveryMemory,
)
from .memories.factual import LinearAssociativeMemory, MLPAssociativeMemory, random_embeddings
from .memories.predictive_coding.pc_memory import PCNetMemory
from .memory import (
    GaussianMixtureMemory,
    Memory,
    MixturePriorMemory,
    MultimodalPosteriorWarning,
    PriorLikelihoodMemory,
    methods_table,
)
from .models import VAE
from .retrieval import Retrieval
from .sharding import ShardedMemory, ShardFailure
from .training import FitResult, fit

__all__ = [
    "__version__",
    # protocol and result record
    "Memory",
    "PriorLikelihoodMemory",
    "MixturePriorMemory",
    "GaussianMixtureMemory",
    "Retrieval",
    "Evidence",
    "MultimodalPosteriorWarning",
    "methods_table",
    # probabilistic memories
    "KernelDensityMemory",
    "KernelDensityPosterior",
    "NonparametricMemory",
    "NonparametricPosterior",
    "LatentMemory",
    "PredictiveCodingMemory",
    "BayesPCN",
    "PCNetMemory",
    "EntropicMemory",
    "EntropicHeteroMemory",
    "DiffusionMemory",
    "SparseRecoveryMemory",
    "KernelDensity",
    "Mixture",
    # neuroscience seed systems
    "FiringRateMemory",
    # baselines
    "ClassicalHopfield",
    "DenseAssociativeMemory",
    "ModernHopfield",
    "normalize_patterns",
    "RandomFeatureMemory",
    "KernelizedHopfield",
    "CorrelatedDenseMemory",
    "MixtureHopfieldMemory",
    "MemN2N",
    "NTM",
    "encode_codes",
    "SpikingLowRankMemory",
    # comparison, training, analysis, checkpoints
    "compare",
    "Contender",
    "fit",
    "FitResult",
    "VAE",
    "to_inference_data",
    "save",
    "load",
    "register_checkpoint_class",
    "CheckpointError",
    # memories beyond one machine
    "ShardedMemory",
    "ShardFailure",
    "IndexedMemory",
    # modules
    "datasets",
    "corruptions",
    "metrics",
    "inference",
    "models",
    "capabilities",
    "domains",
    "engine",
    "evidence",
    "helpers",
    "validation",
    # factual recall (Nichani, Lee & Bietti)
    "LinearAssociativeMemory",
    "MLPAssociativeMemory",
    "random_embeddings",
]

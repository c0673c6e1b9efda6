"""Neural building blocks of varmem's models: encoders and decoders for learned code spaces, a VAE."""

from .coders import ARCHITECTURES, Decoder, Encoder, build_coders
from .vae import LIKELIHOODS, VAE

__all__ = ["ARCHITECTURES", "Encoder", "Decoder", "build_coders", "VAE", "LIKELIHOODS"]

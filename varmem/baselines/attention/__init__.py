"""Trained attention readers (MemN2N, a read-only NTM head) and their ``"attention"`` engine."""

from .engine import Attends, retrieve_attention
from .memn2n import MemN2N
from .ntm import NTM
from .reader import AttentionReader, ReaderFit, encode_codes

__all__ = ["MemN2N", "NTM", "AttentionReader", "ReaderFit", "encode_codes", "Attends", "retrieve_attention"]

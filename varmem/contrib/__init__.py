"""Optional components that are **not** associative memories (nothing here is a ``varmem.Memory``).

* :mod:`varmem.contrib.dia`: the DIA shared channel-attention unit (Huang et al.), one LSTM-gated
  SE-style attention module shared by all residual blocks of a CNN stage.  Reference §6 judges it
  not an associative memory (no stored patterns, keys or content-addressed retrieval); it lives
  here, outside the memory protocol, the comparison and the conformance suite.
"""

from .dia import DIALSTMCell, DIAResNet, DIAStage, dia_parameter_count

__all__ = ["DIALSTMCell", "DIAStage", "DIAResNet", "dia_parameter_count"]

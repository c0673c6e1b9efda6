"""A :class:`PCNet`'s architecture as JSON (:func:`net_spec`) and back (:func:`build_net`): how a
:class:`~varmem.memories.predictive_coding.PCNetMemory` saves the network it holds (the weights go
to the checkpoint's tensors; this description goes to its config)."""

from __future__ import annotations

from typing import Any

from .composition import Conv2d, ConvTranspose2d, Dense, PCNet

__all__ = ["net_spec", "build_net"]

_LAYERS = {"Dense": Dense, "Conv2d": Conv2d, "ConvTranspose2d": ConvTranspose2d}
_SPEC_KEYS = ("top_shape", "layers", "energies", "sigmas", "top_prior", "sigma_top", "seed")


# --- the network as JSON ------------------------------------------------------------------------
def _int_or_list(value: Any) -> Any:
    t = tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),)
    return t[0] if len(set(t)) == 1 else list(t)


def net_spec(net: PCNet) -> dict[str, Any]:
    """A JSON-able description of ``net``'s architecture (what :func:`build_net` rebuilds; the
    weights are not part of it).  ``TypeError`` for a layer that is not :class:`Dense`,
    :class:`Conv2d` or :class:`ConvTranspose2d` with a named activation (such a network works,
    but cannot be described, so a memory holding it cannot be saved)."""
    layers = []
    for i, layer in enumerate(net.layers):
        kind = type(layer).__name__
        if type(layer) not in _LAYERS.values() or not isinstance(layer.activation, str):
            raise TypeError(f"net layer {i} ({kind}) cannot be described as JSON: only Dense, Conv2d and "
                            "ConvTranspose2d layers with a named activation can be saved")
        inner = layer.inner
        entry: dict[str, Any] = {"type": kind}
        if kind == "Dense":
            entry.update(in_features=inner.in_features, out_features=inner.out_features)
        else:
            entry.update(in_channels=inner.in_channels, out_channels=inner.out_channels,
                         kernel_size=_int_or_list(inner.kernel_size), stride=_int_or_list(inner.stride),
                         padding=_int_or_list(inner.padding))
            if kind == "ConvTranspose2d":
                entry["output_padding"] = _int_or_list(inner.output_padding)
        entry.update(bias=inner.bias is not None, activation=layer.activation, where=layer.where)
        layers.append(entry)
    return {"top_shape": list(net.shapes[0]), "layers": layers, "energies": list(net.energies),
            "sigmas": [float(s) for s in net.sigmas], "top_prior": bool(net.top_prior),
            "sigma_top": float(net.sigma_top)}


def build_net(spec: Any, name: str = "net") -> PCNet:
    """The :class:`PCNet` described by ``spec`` (a dict as :func:`net_spec` returns, optionally with
    ``"seed"``, the seed of the initial weights, default 0); errors name ``name``."""
    if not isinstance(spec, dict):
        raise TypeError(f"{name} must be a PCNet or a dict describing one, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(_SPEC_KEYS), key=str)
    missing = [k for k in ("top_shape", "layers") if k not in spec]
    if unknown or missing:
        raise ValueError(f"{name} must be a dict with the keys {list(_SPEC_KEYS)} (top_shape and layers required); "
                         f"unknown {unknown}, missing {missing}")
    entries = spec["layers"]
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError(f"{name}['layers'] must be a non-empty list of layer dicts, got {entries!r}")
    layers = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("type") not in _LAYERS:
            raise ValueError(f"{name}['layers'][{i}] must be a dict with 'type' one of {list(_LAYERS)}, got {entry!r}")
        kwargs = {k: v for k, v in entry.items() if k != "type"}
        for key, value in kwargs.items():  # JSON-able scalars only: no tensors, objects or callables
            if not (isinstance(value, (bool, int, float, str)) or (
                    isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value))):
                raise TypeError(f"{name}['layers'][{i}][{key!r}] must be a number, a name or a list of ints, "
                                f"got {value!r}")
            if isinstance(value, list):
                kwargs[key] = tuple(value)
        try:
            layers.append(_LAYERS[entry["type"]](**kwargs))
        except (TypeError, ValueError) as e:
            raise type(e)(f"{name}['layers'][{i}]: {e}") from None
        except RuntimeError as e:
            raise ValueError(f"{name}['layers'][{i}]: {e}") from None
    options = {k: spec[k] for k in ("energies", "sigmas", "top_prior", "sigma_top", "seed") if k in spec}
    if isinstance(options.get("sigmas"), list):
        options["sigmas"] = list(options["sigmas"])
    top = _shape(spec["top_shape"], name)
    try:
        return PCNet(top, layers, **options)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name}: {e}") from None


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ValueError(f"{name}['top_shape'] must be a non-empty list of positive ints, got {value!r}")
    return tuple(value)

"""Reader for MatConvNet ``simplenn`` models saved as MATLAB v7.3 (HDF5) ``.mat`` files.

Such a file holds a struct ``net`` (or a bare ``layers``) whose ``layers`` field is a cell array of references, one
struct per layer with ``type`` (``'conv'``, ``'relu'``, ``'SubP'``, ``'concat'``, ...), ``name`` and, for
convolutions, ``weights = {kernel, bias}``, ``stride`` and ``pad``.

MATLAB writes arrays column-major, so h5py sees every array with its dimensions reversed: a kernel of MATLAB shape
(H, W, in, out) reads as (out, in, W, H), and trailing singleton dimensions (out = 1) are dropped by MATLAB. The reader
restores the PyTorch layout (out, in, kh, kw). Only h5py is needed; it is imported when a file is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sandbox.errors import SandboxError

__all__ = ["read_matconvnet"]


def _text(ds: Any) -> str:
    """A MATLAB char array (uint16 code points; an empty one is flagged ``MATLAB_empty``) as a str."""
    if ds.attrs.get("MATLAB_empty", 0):
        return ""
    return "".join(map(chr, np.asarray(ds[()]).ravel()))


def _numbers(ds: Any) -> list[float]:
    return [] if ds.attrs.get("MATLAB_empty", 0) else [float(v) for v in np.asarray(ds[()]).ravel()]


def _conv_tensors(f: Any, layer: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(weight (out, in, kh, kw), bias (out,)) of a conv layer, as float32."""
    cell = layer.get("weights")
    if cell is None or cell.attrs.get("MATLAB_empty", 0) or cell.dtype != object:
        raise SandboxError(f"{where}: conv layer has no weights")
    refs = np.asarray(cell[()]).ravel()
    if len(refs) != 2:
        raise SandboxError(f"{where}: conv layer has {len(refs)} weight arrays; expected 2 (kernel, bias)")
    kernel = np.asarray(f[refs[0]][()], dtype=np.float32)
    bias = np.asarray(f[refs[1]][()], dtype=np.float32).ravel()
    if kernel.ndim > 4:
        raise SandboxError(f"{where}: conv kernel has {kernel.ndim} dimensions; expected at most 4")
    kernel = kernel.reshape((1,) * (4 - kernel.ndim) + kernel.shape)  # MATLAB dropped trailing 1s: (out, in, W, H)
    weight = np.ascontiguousarray(kernel.transpose(0, 1, 3, 2))  # (out, in, W, H) -> (out, in, H, W)
    if bias.size != weight.shape[0]:
        raise SandboxError(f"{where}: bias has {bias.size} values for {weight.shape[0]} output channels")
    return weight, bias


def read_matconvnet(path: str | os.PathLike, conv_only: bool = True) -> list[dict[str, Any]]:
    """Read the layers of a MatConvNet v7.3 ``.mat`` model.

    Args:
        path: the ``.mat`` file (MATLAB ``save(..., '-v7.3')``, i.e. HDF5).
        conv_only: return only the convolution layers (default); ``False`` returns every layer in order.

    Returns:
        One dict per layer with ``name`` and ``type``; conv layers add ``weight`` (numpy float32, PyTorch layout
        (out, in, kh, kw)), ``bias`` (out,), ``stride`` and ``pad`` (lists of numbers as stored); other layers add
        their numeric fields (e.g. ``scale`` of a ``SubP`` layer, ``leak`` of a ``relu``).

    Raises:
        SandboxError: the file is missing, is not HDF5 (an older MATLAB format), or holds no MatConvNet layers.
    """
    path = Path(path)
    if not path.is_file():
        raise SandboxError(f"MatConvNet file {str(path)!r} does not exist")
    try:
        import h5py
    except ImportError:
        raise SandboxError(f"reading {str(path)!r} needs h5py: pip install h5py") from None
    if not h5py.is_hdf5(path):
        raise SandboxError(
            f"{str(path)!r} is not a MATLAB v7.3 (HDF5) file; re-save it in MATLAB with save(file, 'net', '-v7.3')"
        )
    layers: list[dict[str, Any]] = []
    with h5py.File(path, "r") as f:
        cells = f["net"].get("layers") if isinstance(f.get("net"), h5py.Group) else f.get("layers")
        if not isinstance(cells, h5py.Dataset) or cells.dtype != object:
            raise SandboxError(
                f"{str(path)!r} is HDF5 but not a MatConvNet simplenn model (no 'net.layers' cell array); "
                f"top-level entries: {', '.join(k for k in f if k != '#refs#') or 'none'}"
            )
        for i, ref in enumerate(np.asarray(cells[()]).ravel()):
            layer = f[ref]
            if not isinstance(layer, h5py.Group) or "type" not in layer:
                raise SandboxError(f"{str(path)!r}: layer {i + 1} is not a struct with a 'type' field (DagNN model?)")
            kind = _text(layer["type"])
            name = _text(layer["name"]) if "name" in layer else f"layer{i + 1}"
            if conv_only and kind != "conv":
                continue
            entry: dict[str, Any] = {"name": name, "type": kind}
            if kind == "conv":
                entry["weight"], entry["bias"] = _conv_tensors(f, layer, f"{str(path)!r} layer {name!r}")
            for key in ("stride", "pad", "scale", "leak", "dilate"):
                if key in layer and layer[key].dtype != object:
                    entry[key] = _numbers(layer[key])
            layers.append(entry)
    return layers

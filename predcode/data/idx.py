"""Reader and writer for the IDX format used by (Fashion-)MNIST.

Layout: two zero bytes, a type code, the number of dimensions ``d``, then ``d``
big-endian uint32 sizes, then the data in big-endian C order.
Gzip-compressed files are recognised by their magic bytes, whatever their name.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from .cache import maybe_gunzip
from .exceptions import IDXFormatError

#: IDX type code -> numpy dtype (big-endian, as stored).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}


def read_idx(source: str | Path | bytes, *, name: str | None = None) -> np.ndarray:
    """Parse an IDX file (path or raw bytes, optionally gzipped) into a writable numpy array.

    Multi-byte types are returned in native byte order.

    Raises:
        IDXFormatError: bad magic number, unknown type code, truncated or over-long data,
            or a corrupt gzip stream. The message names the file.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    raw = Path(source).read_bytes() if not isinstance(source, bytes) else source
    return parse_idx_bytes(maybe_gunzip(raw, label=label), label=label)


def parse_idx_bytes(data: bytes, *, label: str = "<bytes>") -> np.ndarray:
    """Parse uncompressed IDX bytes; see :func:`read_idx`."""
    if len(data) < 4:
        raise IDXFormatError(f"{label}: truncated IDX file ({len(data)} bytes, no header)")
    zero1, zero2, code, ndim = data[0], data[1], data[2], data[3]
    if zero1 != 0 or zero2 != 0 or code not in IDX_DTYPES:
        raise IDXFormatError(
            f"{label}: bad IDX magic number 0x{data[:4].hex()} "
            f"(expected 0x0000TTDD with type TT in {sorted(hex(c) for c in IDX_DTYPES)})"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXFormatError(f"{label}: truncated IDX header ({ndim} dimensions need {header_len} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload = len(data) - header_len
    if payload < expected:
        raise IDXFormatError(f"{label}: truncated IDX data: shape {shape} needs {expected} bytes, file has {payload}")
    if payload > expected:
        raise IDXFormatError(f"{label}: {payload - expected} unexpected trailing bytes after IDX data of shape {shape}")
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header_len)
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as uncompressed IDX bytes (dtype must be one IDX supports)."""
    array = np.asarray(array)
    code = _CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise IDXFormatError(f"dtype {array.dtype} cannot be stored in IDX")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file; gzip it when ``compress`` is True (default: when the name ends in ``.gz``)."""
    path = Path(path)
    data = idx_bytes(array)
    if compress is None:
        compress = path.suffix == ".gz"
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path

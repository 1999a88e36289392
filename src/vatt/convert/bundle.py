"""Read and write TensorFlow 2 checkpoint "tensor bundles" with NumPy only.

``tf.train.Checkpoint(...).save(".../ckpt")`` writes ``ckpt-N.index`` and
``ckpt-N.data-00000-of-00001`` (plus a ``checkpoint`` text file naming the latest).

The ``.index`` file is a LevelDB-format SSTable (see LevelDB's "table format"
document). From the end: a 48-byte footer holding two block handles (varint
offset + varint size) for the metaindex and index blocks, zero padding, and the
magic number 0xdb4775248b80fb57. The index block maps a separator key to the
handle of each data block. A block is a run of entries ``varint shared,
varint non_shared, varint value_len, key suffix, value`` (a key shares
``shared`` leading bytes with the one before it), then the uint32 offsets of the
"restart points" (entries stored whole) and their count. Each block is followed
by a 5-byte trailer: a compression byte (0 = none, 1 = snappy) and the masked
CRC-32C of block + compression byte. All integers are little-endian.

Keys are tensor names, values protobufs from TF's ``tensor_bundle.proto`` (field
numbers in brackets; proto3 leaves out fields that are 0): the empty key holds a
``BundleHeaderProto`` (num_shards [1], endianness [2], version [3]), every other
key a ``BundleEntryProto`` (dtype [1] as TF's DataType enum, shape [2] as a
``TensorShapeProto`` of repeated dim [2] with size [1], shard_id [3], offset [4],
size [5], crc32c [6] as a masked fixed32, slices [7]). The tensor's
bytes are ``size`` bytes at ``offset`` in ``<prefix>.data-<shard:05d>-of-<num_shards:05d>``,
little-endian, row-major. A string tensor is laid out differently: a varint
length per element, the masked CRC-32C of those lengths (taken as uint32s, not
as the varints), then the bytes of every element; its entry's CRC-32C covers
the uint32 lengths, the 4 checksum bytes and the element bytes.

Reading seeks to one tensor at a time, so a multi-GB checkpoint is never loaded
whole. bfloat16 tensors are returned as float32 (exact: bfloat16 is the top
half of a float32). Tensor checksums are only checked on ``read(key, verify=True)``.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BundleEntry", "BundleError", "TensorBundle", "crc32c", "open_bundle", "write_bundle"]

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_M32 = 0xFFFFFFFF
# TF's DataType enum (types.proto) -> (name, storage dtype); bfloat16 is stored as uint16 bits
_DTYPES: dict[int, tuple[str, str]] = {
    1: ("float32", "<f4"), 2: ("float64", "<f8"), 3: ("int32", "<i4"), 4: ("uint8", "u1"),
    5: ("int16", "<i2"), 6: ("int8", "i1"), 7: ("string", "O"), 8: ("complex64", "<c8"),
    9: ("int64", "<i8"), 10: ("bool", "?"), 14: ("bfloat16", "<u2"), 17: ("uint16", "<u2"),
    18: ("complex128", "<c16"), 19: ("float16", "<f2"), 22: ("uint32", "<u4"), 23: ("uint64", "<u8"),
}
_ENUM_OF = {name: num for num, (name, _) in _DTYPES.items()}
Tensor = np.ndarray | bytes | list  # what read() returns


class BundleError(ValueError):
    """A checkpoint that cannot be read; the message names the file and the fix."""


class _Corrupt(Exception):
    """Malformed bytes inside the index; reported as a BundleError naming the file."""


# --- CRC-32C (Castagnoli), reflected, as LevelDB and TF use it -----------------------
def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        c = byte
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()
_TABLE_NP = np.array(_TABLE, dtype=np.uint32)
_TABLE16 = np.arange(1 << 16, dtype=np.uint32)  # the register after two bytes, indexed by their bits
for _ in range(2):
    _TABLE16 = _TABLE_NP[_TABLE16 & 0xFF] ^ (_TABLE16 >> 8)
_SHIFTS: list[np.ndarray] = []  # [k]: 4x256 tables of "append 2**k zero bytes" to a register


def _crc_py(reg: int, data: Any) -> int:
    table = _TABLE
    for b in data:
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _apply(tables: np.ndarray, x: np.ndarray) -> np.ndarray:
    return tables[0][x & 0xFF] ^ tables[1][(x >> 8) & 0xFF] ^ tables[2][(x >> 16) & 0xFF] ^ tables[3][x >> 24]


def _shift_tables(level: int) -> np.ndarray:
    # The register update is linear over GF(2), so "feed n zero bytes" is a 32x32 bit
    # matrix, applied as 4 byte-indexed lookup tables; 2**(k+1) zeros = 2**k zeros twice.
    bits = np.arange(256)
    while len(_SHIFTS) <= level:
        basis = np.uint32(1) << np.arange(32, dtype=np.uint32)
        if _SHIFTS:
            images = _apply(_SHIFTS[-1], _apply(_SHIFTS[-1], basis))
        else:
            images = _TABLE_NP[basis & 0xFF] ^ (basis >> 8)
        tables = np.zeros((4, 256), np.uint32)
        for i in range(32):
            tables[i // 8][(bits >> (i % 8)) & 1 == 1] ^= images[i]
        _SHIFTS.append(tables)
    return _SHIFTS[level]


def _crc_np(reg: int, data: memoryview) -> int:
    # Split into K lanes of L bytes and run the loop on all lanes at once, two bytes a step
    # (lane 0 starts from `reg`, the others from 0); then fold neighbouring lanes with
    # crc(A + B) = shift(crc(A), len(B)) ^ crc(B), which holds as the update is linear.
    level = max(8, min(13, len(data).bit_length() // 2))
    head = len(data) % (1 << level)
    reg = _crc_py(reg, data[:head])
    lanes = np.ascontiguousarray(np.frombuffer(data[head:], "<u2").reshape(-1, 1 << (level - 1)).T)
    regs, index, looked_up = np.zeros((3, lanes.shape[1]), np.uint32)
    regs[0] = reg
    for pair in lanes:  # in place: this loop is the hot path
        np.bitwise_and(np.bitwise_xor(regs, pair, out=index), 0xFFFF, out=index)
        np.right_shift(regs, 16, out=regs)
        regs ^= np.take(_TABLE16, index, out=looked_up)
    while len(regs) > 1:
        if len(regs) % 2:  # a leading all-zero lane with register 0 changes nothing
            regs = np.concatenate([np.zeros(1, np.uint32), regs])
        regs = _apply(_shift_tables(level), regs[0::2]) ^ regs[1::2]
        level += 1
    return int(regs[0])


def crc32c(data: Any, crc: int = 0) -> int:
    """CRC-32C of a bytes-like ``data``, continuing from ``crc`` (like ``zlib.crc32``).

    Pure Python per byte for small inputs (the index), NumPy-vectorised for large ones
    (roughly 150 MB/s, used by the writer and by ``read(verify=True)``).
    """
    view = memoryview(data).cast("B")
    reg = crc ^ _M32
    for start in range(0, len(view), 1 << 26):  # bound the transposed copy to 64 MB
        piece = view[start : start + (1 << 26)]
        reg = _crc_np(reg, piece) if len(piece) >= 1 << 16 else _crc_py(reg, piece)
    return reg ^ _M32


def _mask(crc: int) -> int:
    # LevelDB masks stored CRCs so that a CRC of data containing CRCs stays well-mixed
    return ((((crc >> 15) | (crc << 17)) & _M32) + 0xA282EAD8) & _M32


def _unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & _M32
    return ((rot >> 17) | (rot << 15)) & _M32


# --- protobuf wire format: just what tensor_bundle.proto needs --------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Corrupt("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> dict[int, list[Any]]:
    """Field number -> values (ints, or bytes for length-delimited) of one message."""
    out: dict[int, list[Any]] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        wire = tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        else:
            raise _Corrupt(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise _Corrupt("protobuf field runs past the end of its message")
        out.setdefault(tag >> 3, []).append(value)
    return out


def _int(fields: dict[int, list[Any]], num: int) -> int:
    v = fields.get(num, [0])[-1]  # proto3 leaves out zeros; int32/int64 are two's complement
    return v - (1 << 64) if v >= 1 << 63 else v


def _enc_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _enc_field(num: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _enc_varint(num << 3 | 2) + _enc_varint(len(value)) + value
    return _enc_varint(num << 3) + _enc_varint(value)


# --- SSTable blocks -------------------------------------------------------------------
def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Corrupt("block shorter than its restart count")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise _Corrupt("block restart array larger than the block")
    key, pos = b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        size, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + size > end:
            raise _Corrupt("block entry runs past the end of its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + size]
        pos += size


def _block_handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _read_block(index: bytes, offset: int, size: int) -> bytes:
    if offset + size + 5 > len(index) - _FOOTER:
        raise _Corrupt(f"block at {offset} (+{size} bytes) runs past the end of the file")
    block = index[offset : offset + size]
    kind = index[offset + size]
    (stored,) = struct.unpack_from("<I", index, offset + size + 1)
    if crc32c(index[offset : offset + size + 1]) != _unmask(stored):
        raise _Corrupt(f"checksum mismatch in the block at offset {offset}")
    if kind == 1:
        raise _Corrupt("block is snappy-compressed, which this reader does not support "
                       "(TF writes bundles uncompressed; re-save the checkpoint with TensorFlow)")
    if kind != 0:
        raise _Corrupt(f"unknown block compression type {kind}")
    return block


def _table_entries(index: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(index) < _FOOTER or int.from_bytes(index[-8:], "little") != _MAGIC:
        raise _Corrupt("no SSTable magic number at the end (truncated, or not a .index file)")
    footer = index[-_FOOTER:]
    _, _, pos = _block_handle(footer)  # the metaindex block: TF writes it empty
    offset, size, _ = _block_handle(footer, pos)
    for _, handle in _block_entries(_read_block(index, offset, size)):
        yield from _block_entries(_read_block(index, *_block_handle(handle)[:2]))


# --- reading ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives. ``dtype`` is TF's name ("float32", "bfloat16", "string", ...)."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # unmasked CRC-32C of the ``size`` stored bytes
    sliced: bool  # a partitioned variable: its data lives in slice entries


def _resolve(path: str | os.PathLike) -> Path:
    """The checkpoint prefix for a prefix, a ``.index`` / ``.data-*`` file or a folder."""
    p = Path(path)
    if p.is_dir():
        state = p / "checkpoint"
        if state.is_file():
            m = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', state.read_text(), re.M)
            if not m:
                raise BundleError(f"{state} has no model_checkpoint_path line: pass the checkpoint prefix")
            named = Path(re.sub(r"\\(.)", r"\1", m.group(1)))
            # an absolute path recorded on another machine: look next to the state file
            for prefix in (p / named, p / named.name):
                if prefix.with_name(prefix.name + ".index").is_file():
                    return prefix
            raise BundleError(f"{state} names checkpoint {named}, but {p / named.name}.index is missing")
        found = sorted(p.glob("*.index"))
        if not found:
            raise BundleError(f"folder {p} holds no checkpoint: no 'checkpoint' file and no *.index file")
        if len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise BundleError(f"folder {p} holds several checkpoints ({names}) and no 'checkpoint' file: "
                              "pass the prefix of the one to read")
        return found[0].with_suffix("")
    if p.suffix == ".index":
        p = p.with_suffix("")
    p = p.with_name(re.sub(r"\.data-\d{5}-of-\d{5}$", "", p.name))
    if not p.with_name(p.name + ".index").is_file():
        raise BundleError(f"no checkpoint at {path}: {p}.index does not exist "
                          "(pass a checkpoint prefix like .../ckpt-500000, its .index file or its folder)")
    return p


class TensorBundle:
    """A TF checkpoint opened for lazy, per-tensor reads; also a context manager.

    ``path`` is a prefix (``.../ckpt-500000``), its ``.index`` file, or a folder (its
    ``checkpoint`` file names the latest checkpoint, else its single ``*.index`` is used).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.prefix = _resolve(path)
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        self._files: dict[int, Any] = {}
        self._entries: dict[str, BundleEntry] = {}
        header = None
        try:
            for key, value in _table_entries(self.index_path.read_bytes()):
                if key == b"":
                    header = _fields(value)
                elif not key.startswith(b"\x00"):  # b"\0..." keys are slices of partitioned vars
                    self._entries[key.decode("utf-8", "surrogateescape")] = self._entry(key, value)
        except _Corrupt as e:
            raise BundleError(f"checkpoint index {self.index_path} is corrupt: {e}; "
                              "copy the file again from its source") from None
        if header is None:
            raise BundleError(f"{self.index_path} has no bundle header: not a TF checkpoint index")
        if _int(header, 2) == 1:
            raise BundleError(f"{self.index_path} is a big-endian bundle, which this reader does not "
                              "support: re-save it with TensorFlow on a little-endian machine")
        self.num_shards = _int(header, 1)
        for shard in range(self.num_shards):
            data = self._data_path(shard)
            if not data.is_file():
                raise BundleError(f"checkpoint {self.index_path.name}: its data file {data.name} is missing: "
                                  f"copy it next to the .index (into {data.parent})")

    @staticmethod
    def _entry(key: bytes, value: bytes) -> BundleEntry:
        f = _fields(value)
        dims = [_fields(d) for d in _fields(f.get(2, [b""])[-1]).get(2, [])]
        crc = f.get(6, [None])[-1]
        return BundleEntry(
            key=key.decode("utf-8", "surrogateescape"),
            dtype=_DTYPES.get(_int(f, 1), (f"enum {_int(f, 1)}", ""))[0],
            shape=tuple(_int(d, 1) for d in dims),
            shard_id=_int(f, 3), offset=_int(f, 4), size=_int(f, 5),
            crc32c=_unmask(crc) if crc is not None else 0,
            sliced=bool(f.get(7)),
        )

    def _data_path(self, shard: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard:05d}-of-{self.num_shards:05d}")

    def keys(self) -> list[str]:
        """Tensor names, sorted (the header entry is not a tensor and is left out)."""
        return sorted(self._entries)

    def entry(self, key: str) -> BundleEntry:
        """Metadata of one tensor; ``KeyError`` naming the index for an unknown key."""
        try:
            return self._entries[key]
        except KeyError:
            raise KeyError(f"{key!r} is not a tensor in {self.index_path}") from None

    def shape(self, key: str) -> tuple[int, ...]:
        return self.entry(key).shape

    def dtype(self, key: str) -> np.dtype:
        """NumPy dtype that ``read`` returns: float32 for bfloat16, object for strings."""
        name = self.entry(key).dtype
        if name not in _ENUM_OF:
            raise BundleError(f"{key!r} in {self.index_path} has unsupported TF dtype {name}")
        return np.dtype("float32" if name == "bfloat16" else _DTYPES[_ENUM_OF[name]][1])

    def read(self, key: str, verify: bool = False) -> Tensor:
        """One tensor, reading only its bytes. ``verify`` checks its CRC-32C (slower).

        Numbers come back as an ndarray (bfloat16 as float32); strings as ``bytes`` for a
        scalar, else nested lists of ``bytes``.
        """
        e = self.entry(key)
        self.dtype(key)  # raises for dtypes this reader cannot return
        if e.sliced:
            raise BundleError(f"{key!r} in {self.index_path} is a partitioned (sliced) variable, "
                              "which this reader does not support")
        count = int(np.prod(e.shape, dtype=np.int64))
        storage = np.dtype(_DTYPES[_ENUM_OF[e.dtype]][1])
        if e.dtype != "string" and e.size != count * storage.itemsize:
            raise BundleError(f"{key!r} in {self.index_path}: {e.size} bytes stored for shape {e.shape} "
                              f"of {e.dtype}; the index is inconsistent, copy it again")
        raw = np.empty(e.size, np.uint8)
        self._read_into(e, raw)
        if e.dtype == "string":
            return self._strings(e, raw.tobytes(), count, verify)
        if verify and crc32c(raw) != e.crc32c:
            raise BundleError(f"{key!r}: checksum mismatch in {self._data_path(e.shard_id)}; "
                              "the data file is corrupt, copy it again")
        arr = raw.view(storage).reshape(e.shape)
        return (arr.astype(np.uint32) << 16).view(np.float32) if e.dtype == "bfloat16" else arr

    def _read_into(self, e: BundleEntry, out: np.ndarray) -> None:
        path = self._data_path(e.shard_id)
        f = self._files.get(e.shard_id)
        if f is None:
            f = self._files[e.shard_id] = open(path, "rb", buffering=0)  # noqa: SIM115
        have = os.fstat(f.fileno()).st_size
        if e.offset + e.size > have:
            raise BundleError(f"data file {path} is truncated: tensor {e.key!r} needs bytes "
                              f"{e.offset}..{e.offset + e.size} but the file has {have} bytes; "
                              "copy the complete file again")
        f.seek(e.offset)
        done = 0
        while done < e.size:  # one read() returns at most ~2 GB on Linux
            n = f.readinto(memoryview(out)[done:])
            if not n:
                raise BundleError(f"data file {path} ended while reading {e.key!r}")
            done += n

    def _strings(self, e: BundleEntry, raw: bytes, count: int, verify: bool) -> bytes | list:
        try:
            lengths, pos = [], 0
            for _ in range(count):
                n, pos = _varint(raw, pos)
                lengths.append(n)
            as_u32 = struct.pack(f"<{count}I", *lengths)
            stored = _unmask(int.from_bytes(raw[pos : pos + 4], "little"))
            if pos + 4 + sum(lengths) != len(raw) or stored != crc32c(as_u32):
                raise _Corrupt("its lengths do not add up")
            if verify and crc32c(raw[pos:], crc32c(as_u32)) != e.crc32c:
                raise _Corrupt("checksum mismatch")
        except (_Corrupt, struct.error) as why:
            raise BundleError(f"string tensor {e.key!r} in {self._data_path(e.shard_id)} is corrupt "
                              f"({why}); copy the data file again") from None
        pos += 4
        items = []
        for n in lengths:
            items.append(raw[pos : pos + n])
            pos += n
        if e.shape == ():
            return items[0]
        grid = np.empty(count, object)  # filled item by item: NumPy would not split bytes
        grid[:] = items
        return grid.reshape(e.shape).tolist()

    def items(self) -> Iterator[tuple[str, Tensor]]:
        """``(key, tensor)`` in key order, reading each tensor only when reached."""
        for key in self.keys():
            yield key, self.read(key)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, key: str) -> Tensor:
        return self.read(key)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> TensorBundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorBundle({str(self.prefix)!r}, {len(self)} tensors)"


def open_bundle(path: str | os.PathLike) -> TensorBundle:
    """Open a TF checkpoint; see :class:`TensorBundle` for what ``path`` may be."""
    return TensorBundle(path)


# --- writing ----------------------------------------------------------------------------
class _BlockBuilder:
    def __init__(self, restart_interval: int) -> None:
        self.buf, self.restarts, self.count, self.last = bytearray(), [0], 0, b""
        self.interval = restart_interval

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count and self.count % self.interval == 0:
            self.restarts.append(len(self.buf))
        elif self.count:
            shared = len(os.path.commonprefix([self.last, key]))
        self.buf += _enc_varint(shared) + _enc_varint(len(key) - shared) + _enc_varint(len(value))
        self.buf += key[shared:] + value
        self.count, self.last = self.count + 1, key

    def finish(self) -> bytes:
        return bytes(self.buf) + struct.pack(f"<{len(self.restarts)}I", *self.restarts) + struct.pack(
            "<I", len(self.restarts))


def _write_block(f: Any, block: bytes) -> bytes:
    """Append block + trailer to ``f``; returns its encoded handle."""
    offset = f.tell()
    f.write(block + b"\x00" + struct.pack("<I", _mask(crc32c(block + b"\x00"))))
    return _enc_varint(offset) + _enc_varint(len(block))


def _to_bfloat16(x: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # nearest-even
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def _encode(value: Any, as_bf16: bool) -> tuple[int, tuple[int, ...], Any, int]:
    """-> (dtype enum, shape, bytes-like to store, its entry CRC-32C)."""
    if isinstance(value, bytes) or (isinstance(value, np.ndarray) and value.dtype.kind in "OS"):
        items = [value] if isinstance(value, bytes) else [bytes(v) for v in value.ravel()]
        lengths = struct.pack(f"<{len(items)}I", *(len(s) for s in items))
        check = struct.pack("<I", _mask(crc32c(lengths)))
        strings = b"".join(items)
        crc = crc32c(strings, crc32c(check, crc32c(lengths)))  # uint32 lengths, not the varints
        body = b"".join(_enc_varint(len(s)) for s in items) + check + strings
        return 7, np.shape(value) if not isinstance(value, bytes) else (), body, crc
    arr = np.asarray(value)
    if as_bf16 or arr.dtype.name == "bfloat16":  # float32 rounded here, or an ml_dtypes array
        bits = arr.view(np.uint16) if arr.dtype.name == "bfloat16" else _to_bfloat16(arr)
        arr = bits.reshape(arr.shape)
        dtype = 14
    elif arr.dtype.name in _ENUM_OF and arr.dtype.kind in "biufc":
        dtype = _ENUM_OF[arr.dtype.name]
    else:
        raise BundleError(f"cannot store dtype {arr.dtype} in a TF checkpoint")
    payload = np.ascontiguousarray(arr, arr.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
    return dtype, arr.shape, payload, crc32c(payload)


def write_bundle(
    prefix: str | os.PathLike,
    tensors: Mapping[str, Any] | Iterable[tuple[str, Any]],
    bfloat16: Iterable[str] = (),
) -> Path:
    """Write a single-shard TF checkpoint ``<prefix>.index`` + ``<prefix>.data-00000-of-00001``.

    ``tensors`` maps names to arrays (any dtype in the reader's list), ``bytes`` or byte
    string arrays; pass a generator of ``(name, array)`` pairs to keep only one tensor in
    memory at a time. Keys in ``bfloat16`` have their float values rounded to bfloat16.
    Readable by ``tf.train.load_checkpoint(prefix)``. Returns the prefix.
    """
    prefix = Path(prefix)
    as_bf16 = set(bfloat16)
    pairs = tensors.items() if isinstance(tensors, Mapping) else tensors
    entries: dict[bytes, bytes] = {}
    with open(prefix.with_name(prefix.name + ".data-00000-of-00001"), "wb") as data:
        for name, value in pairs:
            key = name.encode("utf-8", "surrogateescape")
            if not key or key in entries:
                raise BundleError(f"tensor name {name!r} is empty or repeated")
            dtype, shape, payload, crc = _encode(value, name in as_bf16)
            offset = data.tell()
            data.write(payload)
            shape_proto = b"".join(_enc_field(2, _enc_field(1, n) if n else b"") for n in shape)
            entries[key] = (_enc_field(1, dtype) + _enc_field(2, shape_proto) + _enc_field(4, offset)
                            + _enc_field(5, len(payload)) + b"\x35" + struct.pack("<I", _mask(crc)))
    entries[b""] = _enc_field(1, 1) + _enc_field(3, _enc_field(1, 1))  # 1 shard, little-endian, v1
    _write_table(prefix.with_name(prefix.name + ".index"), entries)
    return prefix


def _write_table(path: Path, entries: dict[bytes, bytes]) -> None:
    """An uncompressed SSTable of ``entries``: ~4 KB data blocks (LevelDB's default size)."""
    with open(path, "wb") as f:
        index, block = _BlockBuilder(1), _BlockBuilder(16)
        for key in sorted(entries):
            block.add(key, entries[key])
            if len(block.buf) >= 4096:
                # the index key must be >= every key of its block and < the next block's keys
                index.add(key, _write_block(f, block.finish()))
                block = _BlockBuilder(16)
        if block.count:
            index.add(block.last, _write_block(f, block.finish()))
        footer = _write_block(f, _BlockBuilder(1).finish())  # an empty metaindex, as TF writes
        footer += _write_block(f, index.finish())
        f.write(footer.ljust(_FOOTER - 8, b"\x00") + struct.pack("<Q", _MAGIC))

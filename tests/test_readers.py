import json

import pytest
from helpers import write_sib_like

from cml.config import ConllSource, ConlluSource, DelimitedSource, SIB200Source, SimplemmaSource
from cml.data.examples import split_by_id
from cml.data.readers import read_dataset
from cml.errors import CMLError
from cml.task_family import TaskFamily

C, T, S = TaskFamily.classification, TaskFamily.tagging, TaskFamily.seq2seq


def sib(path, **kw):
    return SIB200Source(format="sib200", path=str(path), **kw)


def test_sib200_reader_reads_every_language_and_split(tmp_path):
    data = read_dataset(sib(write_sib_like(tmp_path)), C)
    assert data.languages == ["deu", "fra", "hin"]
    assert data.counts()["deu"] == {"train": 20, "dev": 5, "test": 6}
    assert data.label_set == ("a", "b", "c")
    first = data.splits["hin"]["train"][0]
    assert (first.id, first.lang, first.label, first.text) == ("0", "hin", "a", "hin_Deva sentence 0")


def test_sib200_language_selection_and_missing_language(tmp_path):
    root = write_sib_like(tmp_path)
    assert read_dataset(sib(root, languages=["de", "hi"]), C).languages == ["deu", "hin"]
    assert read_dataset(sib(root, exclude_languages=["fra"]), C).languages == ["deu", "hin"]
    with pytest.raises(CMLError, match="languages not found in the source: yor"):
        read_dataset(sib(root, languages=["yor"]), C)


@pytest.mark.parametrize("row, message", [
    ("7\ta\ttoo\tmany", "expected 3 tab-separated columns, got 4"),
    ("7\ta\t   ", "empty text"),
    ("7\tzzz\tsome text", "label 'zzz' is not in the label set"),
])
def test_sib200_bad_rows_name_file_and_line(tmp_path, row, message):
    root = write_sib_like(tmp_path)
    path = root / "fra_Latn" / "dev.tsv"
    path.write_text(path.read_text() + row + "\n")
    with pytest.raises(CMLError, match=message) as err:
        read_dataset(sib(root), C)
    assert err.value.file == str(path) and err.value.line == 7


def test_sib200_missing_file(tmp_path):
    root = write_sib_like(tmp_path)
    (root / "deu_Latn" / "test.tsv").unlink()
    with pytest.raises(CMLError, match="missing SIB-200 split file") as err:
        read_dataset(sib(root), C)
    assert err.value.file.endswith("deu_Latn/test.tsv")


def test_unknown_language_folder_is_named(tmp_path):
    root = write_sib_like(tmp_path)
    (root / "xx_Latn").mkdir()
    with pytest.raises(CMLError, match="unknown language code 'xx_Latn'"):
        read_dataset(sib(root), C)


def test_empty_language_after_filtering(tmp_path):
    root = write_sib_like(tmp_path)
    for split in ("train", "dev", "test"):
        (root / "deu_Latn" / f"{split}.tsv").write_text("index_id\tcategory\ttext\n")
    with pytest.raises(CMLError, match="language deu has no train examples"):
        read_dataset(sib(root), C)


def test_tsv_single_file_with_language_column_and_ratio_split(tmp_path):
    path = tmp_path / "all.tsv"
    rows = ["id\tlang\ttext\tlabel"] + [f"s{i}\t{lang}\ttext {i}\t{'pos' if i % 2 else 'neg'}"
                                        for lang in ("de", "fr") for i in range(50)]
    path.write_text("\n".join(rows) + "\n")
    source = DelimitedSource(format="tsv", path=str(path), columns={"id": "id", "language": "lang"},
                             split={"train": 0.6, "dev": 0.2, "test": 0.2})
    data = read_dataset(source, C)
    assert data.counts() == {"deu": {"train": 30, "dev": 10, "test": 10}, "fra": {"train": 30, "dev": 10, "test": 10}}
    # parallel ids go to the same split in every language
    assert [e.id for e in data.splits["deu"]["test"]] == [e.id for e in data.splits["fra"]["test"]]


def test_csv_wrong_column_count(tmp_path):
    path = tmp_path / "all.csv"
    path.write_text('lang,text,label\nde,"a, quoted",x\nde,b\n')
    source = DelimitedSource(format="csv", path=str(path), columns={"language": "lang"})
    with pytest.raises(CMLError, match=r"expected 3 columns \(lang, text, label\), got 2") as err:
        read_dataset(source, C)
    assert err.value.line == 3


def test_jsonl_per_language_folders_for_seq2seq_and_tagging(tmp_path):
    for lang in ("de", "fi"):
        folder = tmp_path / lang
        folder.mkdir()
        for split in ("train", "dev", "test"):
            with (folder / f"{split}.jsonl").open("w") as handle:
                for i in range(4):
                    handle.write(json.dumps({"source": f"w{i}s", "target": f"w{i}", "tokens": ["a", "b"],
                                             "tags": "X Y"}) + "\n")
    s2s = read_dataset(DelimitedSource(format="jsonl", path=str(tmp_path)), S)
    assert s2s.splits["fin"]["dev"][1].target == "w1"
    tag = read_dataset(DelimitedSource(format="jsonl", path=str(tmp_path)), T)
    assert tag.splits["deu"]["train"][0].tags == ("X", "Y")


def test_jsonl_invalid_json(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"lang": "de", "text": "x", "label": "y"}\n{broken\n')
    with pytest.raises(CMLError, match="invalid JSON") as err:
        read_dataset(DelimitedSource(format="jsonl", path=str(tmp_path / "d.jsonl"), columns={"language": "lang"}), C)
    assert err.value.line == 2


CONLLU = """# sent_id = s1
# text = Im Haus.
1-2\tIm\t_\t_\t_\t_\t_\t_\t_\t_
1\tIn\tin\tADP\tAPPR\t_\t3\tcase\t_\t_
2\tdem\tder\tDET\tART\t_\t3\tdet\t_\t_
3\tHaus\tHaus\tNOUN\tNN\t_\t0\troot\t_\t_
3.1\tleer\t_\t_\t_\t_\t_\t_\t_\t_
4\t.\t.\tPUNCT\t$.\t_\t3\tpunct\t_\t_

"""


def test_conllu_skips_ranges_and_empty_nodes(tmp_path):
    folder = tmp_path / "UD_German-X"
    folder.mkdir()
    (folder / "de_x-ud-train.conllu").write_text(CONLLU)
    (folder / "de_x-ud-dev.conllu").write_text(CONLLU.replace("s1", "s2"))
    (folder / "de_x-ud-test.conllu").write_text(CONLLU.replace("s1", "s3"))
    data = read_dataset(ConlluSource(format="conllu", path=str(tmp_path)), T)
    example = data.splits["deu"]["train"][0]
    assert example.id == "s1"
    assert example.tokens == ("In", "dem", "Haus", ".")
    assert example.tags == ("ADP", "DET", "NOUN", "PUNCT")
    xpos = read_dataset(ConlluSource(format="conllu", path=str(tmp_path), tag_column="xpos"), T)
    assert xpos.splits["deu"]["test"][0].tags == ("APPR", "ART", "NN", "$.")


def test_conllu_selection_skips_treebanks_with_unknown_codes(tmp_path):
    """ud_treebanks holds UD_Maghrebi_Arabic_French-Arabizi/qaf_arabizi-ud-*.conllu: no known code, so reading
    the folder for some languages skips it, and reading it for all languages names it."""
    for folder, prefix in (("UD_German-X", "de_x"), ("UD_Maghrebi_Arabic_French-Arabizi", "qaf_arabizi")):
        (tmp_path / folder).mkdir()
        for split in ("train", "dev", "test"):
            (tmp_path / folder / f"{prefix}-ud-{split}.conllu").write_text(CONLLU.replace("s1", f"s-{split}"))
    data = read_dataset(ConlluSource(format="conllu", path=str(tmp_path), languages=["de"]), T)
    assert data.languages == ["deu"] and data.counts()["deu"] == {"train": 1, "dev": 1, "test": 1}
    with pytest.raises(CMLError, match="unknown language code 'qaf'") as err:
        read_dataset(ConlluSource(format="conllu", path=str(tmp_path)), T)
    assert "qaf_arabizi-ud-" in str(err.value.file)


def test_conllu_broken_line(tmp_path):
    (tmp_path / "de_x-ud-test.conllu").write_text(CONLLU.replace("2\tdem\tder\tDET", "2\tdem\tDET"))
    with pytest.raises(CMLError, match="expected 10 tab-separated CoNLL-U columns") as err:
        read_dataset(ConlluSource(format="conllu", path=str(tmp_path)), T)
    assert err.value.line == 5


def _write_conll(root, body):
    for split in ("train", "dev", "test"):
        (root / "yo").mkdir(exist_ok=True)
        (root / "yo" / f"{split}.txt").write_text(body)


def test_conll_ner_reads_sentences_and_ignores_docstart(tmp_path):
    _write_conll(tmp_path, "-DOCSTART- O\n\nAde B-PER\nOla I-PER\nlo O\n\nEko B-LOC\n")
    data = read_dataset(ConllSource(format="conll", path=str(tmp_path)), T)
    train = data.splits["yor"]["train"]
    assert [e.tags for e in train] == [("B-PER", "I-PER", "O"), ("B-LOC",)]


@pytest.mark.parametrize("body, message, line", [
    ("Ade B-PER\nOla I-LOC\n", "invalid IOB2 sequence: I-LOC follows B-PER", 2),  # the offending token's line
    ("Ade O\nOla I-PER\n", "invalid IOB2 sequence: I-PER follows O", 2),
    ("Ade PER\n", "'PER' is not an IOB2 tag", 1),
])
def test_conll_invalid_bio(tmp_path, body, message, line):
    _write_conll(tmp_path, body)
    with pytest.raises(CMLError, match=message) as err:
        read_dataset(ConllSource(format="conll", path=str(tmp_path)), T)
    assert err.value.line == line


def test_split_by_id_is_deterministic_and_exact():
    from cml.data.examples import Example
    examples = [Example(str(i), "deu", text="t", label="a") for i in range(100)]
    a = split_by_id(examples, {"train": 0.7, "dev": 0.1, "test": 0.2}, seed=0)
    b = split_by_id(list(reversed(examples)), {"train": 0.7, "dev": 0.1, "test": 0.2}, seed=0)
    assert [len(a[s]) for s in ("train", "dev", "test")] == [70, 10, 20]
    assert {e.id for e in a["test"]} == {e.id for e in b["test"]}


def test_simplemma_pairs_are_deterministic_and_not_identity():
    source = SimplemmaSource(format="simplemma", languages=["deu", "fin"], pairs_per_language=50)
    a = read_dataset(source, S)
    b = read_dataset(source, S)
    assert a.counts()["deu"] == {"train": 40, "dev": 5, "test": 5}
    assert [(e.text, e.target) for e in a.splits["fin"]["train"]] == [(e.text, e.target) for e in b.splits["fin"]["train"]]
    assert all(e.text != e.target for e in a.splits["deu"]["train"])
    with pytest.raises(CMLError, match="simplemma has no dictionary for yor"):
        read_dataset(SimplemmaSource(format="simplemma", languages=["yor"]), S)


def test_huggingface_json_builder_offline(tmp_path):
    pytest.importorskip("datasets")
    from cml.config import HuggingFaceSource
    for code in ("de", "fr"):
        for split in ("train", "validation", "test"):
            with (tmp_path / f"{code}.{split}.jsonl").open("w") as handle:
                for i in range(3):
                    handle.write(json.dumps({"text": f"{code} {i}", "label": "x"}) + "\n")
    source = HuggingFaceSource(format="huggingface", dataset="json", languages=["deu", "fra"],
                               language_codes={"deu": "de", "fra": "fr"},
                               data_files={s: str(tmp_path / ("{code}." + s + ".jsonl"))
                                           for s in ("train", "validation", "test")})
    data = read_dataset(source, C)
    assert data.counts()["fra"] == {"train": 3, "dev": 3, "test": 3}

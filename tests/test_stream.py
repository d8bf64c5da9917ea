import pytest
from helpers import write_sib_like

from cml.config import SIB200Source, StreamConfig
from cml.data.readers import read_dataset
from cml.data.stream import build_stream
from cml.errors import CMLError
from cml.task_family import TaskFamily


@pytest.fixture
def dataset(tmp_path):
    return read_dataset(SIB200Source(format="sib200", path=str(write_sib_like(tmp_path, n=(40, 5, 6)))),
                        TaskFamily.classification)


def stream_of(dataset, stages, seed=0, **kw):
    return build_stream(dataset, StreamConfig(stages=stages, **kw), seed)


def test_stages_take_disjoint_examples_and_dev_test_are_fixed(dataset):
    stream = stream_of(dataset, [{"name": "initial", "amount": 0.5},
                                 {"name": "up", "languages": ["deu", "hin"], "amount": 1.0}])
    assert stream.stages[0].counts() == {"deu": 20, "fra": 20, "hin": 20}
    assert stream.stages[1].counts() == {"deu": 20, "hin": 20}
    for lang in ("deu", "hin"):
        first = {e.id for e in stream.stages[0].train[lang]}
        second = {e.id for e in stream.stages[1].train[lang]}
        assert not first & second and len(first | second) == 40
    assert [e.id for e in stream.test["fra"]] == [e.id for e in dataset.splits["fra"]["test"]]


def test_all_except_and_per_language_counts(dataset):
    stream = stream_of(dataset, [{"name": "s0", "amount": 10, "per_language": {"fr": 3}},
                                 {"name": "s1", "languages": {"all_except": ["fra"]}, "amount": 0.25}])
    assert stream.stages[0].counts() == {"deu": 10, "fra": 3, "hin": 10}
    assert stream.stages[1].counts() == {"deu": 8, "hin": 8}  # a quarter of the remaining 30


def test_same_seed_same_stream_other_seed_differs(dataset):
    stages = [{"name": "s0", "amount": 10}]
    ids = lambda seed: [e.id for e in stream_of(dataset, stages, seed).stages[0].train["deu"]]  # noqa: E731
    assert ids(0) == ids(0)
    assert ids(0) != ids(1)


def test_parallel_sentences_align_across_languages_and_disjoint_mode(dataset):
    stream = stream_of(dataset, [{"name": "s0", "amount": 10, "per_language": {"deu": 4}},
                                 {"name": "s1", "languages": ["deu"], "amount": 10}], disjoint_sentences=True)
    stage0_fra = {e.id for e in stream.stages[0].train["fra"]}
    assert {e.id for e in stream.stages[0].train["deu"]} < stage0_fra
    assert not {e.id for e in stream.stages[1].train["deu"]} & stage0_fra


def test_too_much_data_is_an_error(dataset):
    with pytest.raises(CMLError, match="asks for 41 deu examples, but only 40 remain") as err:
        stream_of(dataset, [{"name": "s0", "amount": 41}])
    assert err.value.key == "stream.stages.0"
    with pytest.raises(CMLError, match="only 0 remain"):
        stream_of(dataset, [{"name": "s0", "amount": 1.0}, {"name": "s1", "languages": ["deu"], "amount": 1}])


def test_stage_naming_an_absent_language(dataset):
    with pytest.raises(CMLError, match="does not have: yor") as err:
        stream_of(dataset, [{"name": "s0"}, {"name": "s1", "languages": ["yor"]}])
    assert err.value.key == "stream.stages.1.languages"

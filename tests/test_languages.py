import pytest

from cml.errors import CMLError
from cml.languages import canonical, macrolanguage, parse_language


@pytest.mark.parametrize("code, expected", [
    ("de", "deu"), ("deu", "deu"), ("deu_Latn", "deu"), ("German", "deu"),
    ("zh-TW", "cmn_Hant"), ("zho_Hant", "cmn_Hant"), ("zho_Hans", "cmn"), ("zh", "cmn"), ("cmn", "cmn"),
    ("pt-BR", "por"), ("ar", "arb"), ("ara", "arb"), ("arb_Arab", "arb"), ("arb_Latn", "arb_Latn"),
    ("ms", "zsm"), ("zsm_Latn", "zsm"), ("fa", "pes"), ("prs_Arab", "prs"), ("tgl_Latn", "tgl"),
    ("aka_Latn", "aka"), ("bho_Deva", "bho"), ("ace_Arab", "ace_Arab"), ("ace_Latn", "ace"),
    ("de_pud", "deu"), ("UD_German-PUD", "deu"), ("UD_Chinese-PUD", "cmn"), ("sr-Latn", "srp_Latn"),
    ("kor_Hang", "kor"), ("ko", "kor"), ("UD_Korean-PUD", "kor"), ("jpn_Jpan", "jpn"),
])
def test_canonical_codes(code, expected):
    assert canonical(code) == expected


def test_macrolanguage_of_individual_language():
    assert macrolanguage(parse_language("arb")) == "ara"
    assert parse_language("deu").full_script == "Latn"


@pytest.mark.parametrize("code", ["xx", "qqq", "", "deux"])
def test_unknown_code_is_an_error(code):
    with pytest.raises(CMLError, match="unknown language code|empty language code"):
        canonical(code)


def test_unknown_code_suggests_close_codes():
    with pytest.raises(CMLError, match=r"did you mean: deu \(German\)"):
        canonical("deux")

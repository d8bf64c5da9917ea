"""Seq2seq task: an EncoderDecoderModel assembled around a tiny BERT, and a tiny T5 used as it is."""

from __future__ import annotations

import pytest
import sacrebleu
import torch

from cml.config import ModelConfig, TrainingConfig
from cml.data.examples import Example
from cml.tasks.base import IGNORE
from cml.tasks.seq2seq import Seq2SeqTask

PAIRS = [("walked", "walk"), ("talks", "talk"), ("jumping", "jump"), ("cats", "cat"),
         ("played", "play"), ("books", "book"), ("sings", "sing"), ("dogs", "dog")]
CHARS = "abcdefghijklmnopqrstuvwxyz "

# EncoderDecoderModel warns at every forward with labels about a change of v4.12 that concerns old checkpoints.
pytestmark = pytest.mark.filterwarnings("ignore:Version v4.12.0:FutureWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads, and lose ten times over when another process holds the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def char_tokenizer(specials: dict[str, str], template: str):
    """Characters as tokens, so the tiny models need no learned vocabulary; ``Fuse`` joins them back."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*specials.values(), *CHARS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=specials["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, vocab[t]) for t in specials.values() if t in template])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials)


def save_tiny_bert(folder, specials: dict[str, str]) -> str:
    from transformers import BertConfig, BertModel

    tokenizer = char_tokenizer(specials, "[CLS] $A [SEP]")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id)).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("s2s-bert"), {"pad_token": "[PAD]", "unk_token": "[UNK]",
                                                                "cls_token": "[CLS]", "sep_token": "[SEP]"})


@pytest.fixture(scope="module")
def other_bert(tmp_path_factory) -> str:
    """A decoder checkpoint whose vocabulary numbers the tokens differently from ``tiny_bert``'s."""
    return save_tiny_bert(tmp_path_factory.mktemp("s2s-other"), {"sep_token": "[SEP]", "cls_token": "[CLS]",
                                                                 "unk_token": "[UNK]", "pad_token": "[PAD]"})


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> str:
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("s2s-t5")
    tokenizer = char_tokenizer({"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}, "$A </s>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=64, d_kv=32, d_ff=128, num_layers=2,
                                        num_heads=2, decoder_start_token_id=0, pad_token_id=0,
                                        eos_token_id=1)).save_pretrained(folder)
    return str(folder)


def examples(pairs=PAIRS) -> list[Example]:
    return [Example(str(i), "eng", text=source, target=target) for i, (source, target) in enumerate(pairs)]


def train(task: Seq2SeqTask, model: torch.nn.Module, steps: int) -> tuple[float, float]:
    """Full-batch AdamW on PAIRS; the first and the last loss."""
    batch = task.collate(task.encode(examples()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses[0], losses[-1]


def test_encode_and_collate_assembled(tiny_bert):
    task = Seq2SeqTask(None, ModelConfig(name=tiny_bert))
    assert not task.native
    tokenizer = task.tokenizer
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    features = task.encode(examples([("cats", "cat"), ("jumping", "jump")]))
    chars = lambda text: tokenizer.convert_tokens_to_ids(list(text))  # noqa: E731
    assert features[0]["input_ids"] == [cls, *chars("cats"), sep]
    # No [CLS] in the labels: it is the decoder's start token, which forward() prepends itself.
    assert features[1]["labels"] == [*chars("jump"), sep]

    batch = task.collate(features)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 9)
    assert batch["input_ids"][0, 6:].tolist() == [pad] * 3
    assert batch["attention_mask"][0].tolist() == [1] * 6 + [0] * 3
    assert batch["labels"].tolist() == [[*chars("cat"), sep, IGNORE], [*chars("jump"), sep]]


def test_encode_native_uses_the_family_label_format(tiny_t5):
    task = Seq2SeqTask(None, ModelConfig(name=tiny_t5, max_length=4))
    assert task.native
    features = task.encode(examples([("walked", "walk")]))
    eos = task.tokenizer.eos_token_id
    # Truncation keeps room for </s> on both sides.
    assert features[0]["input_ids"] == [*task.tokenizer.convert_tokens_to_ids(list("wal")), eos]
    assert features[0]["labels"] == task.tokenizer(text_target=["walk"], truncation=True, max_length=4)["input_ids"][0]
    assert features[0]["labels"][-1] == eos


def test_assembled_model_knows_its_special_tokens(tiny_bert):
    from transformers import EncoderDecoderModel

    task = Seq2SeqTask(None, ModelConfig(name=tiny_bert))
    model = task.build_model()
    assert isinstance(model, EncoderDecoderModel)
    assert model.decoder.config.is_decoder and model.decoder.config.add_cross_attention
    table = model.get_input_embeddings().weight
    assert model.decoder.get_input_embeddings().weight is table
    assert model.decoder.get_output_embeddings().weight is table
    tokenizer = task.tokenizer
    for config in (model.config, model.generation_config):
        assert (config.decoder_start_token_id, config.eos_token_id, config.pad_token_id) == (
            tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)


def test_assembled_model_learns_the_pairs(tiny_bert):
    task = Seq2SeqTask(None, ModelConfig(name=tiny_bert, max_new_tokens=12))
    torch.manual_seed(0)
    model = task.build_model()
    first, last = train(task, model, steps=50)
    assert last < first / 10

    # predict() gets the whole batch, labels included, as the trainer's evaluation passes it.
    batch = task.collate(task.encode(examples()))
    greedy = task.predict(model, batch)
    assert greedy == [target for _, target in PAIRS]
    task.model_config = ModelConfig(name=tiny_bert, max_new_tokens=12, num_beams=3)
    beam = task.predict(model, batch)
    assert len(beam) == len(PAIRS) and all(isinstance(p, str) for p in beam)
    assert task.score(examples(), beam)["exact_match"] >= 0.75


def test_native_model_trains_and_predicts(tiny_t5):
    from transformers import T5ForConditionalGeneration

    task = Seq2SeqTask(None, ModelConfig(name=tiny_t5, max_new_tokens=12))
    torch.manual_seed(0)
    model = task.build_model()
    assert isinstance(model, T5ForConditionalGeneration)
    first, last = train(task, model, steps=50)
    assert last < first / 3

    batch = task.collate(task.encode(examples()))
    for num_beams in (1, 3):
        task.model_config = ModelConfig(name=tiny_t5, max_new_tokens=12, num_beams=num_beams)
        predictions = task.predict(model, batch)
        assert len(predictions) == len(PAIRS) and all(isinstance(p, str) for p in predictions)


def test_separate_decoder_brings_its_own_vocabulary(tiny_bert, other_bert):
    task = Seq2SeqTask(None, ModelConfig(name=tiny_bert, decoder=other_bert, max_new_tokens=6))
    source, target = task.tokenizer, task.target_tokenizer
    assert source.cls_token_id != target.cls_token_id
    features = task.encode(examples([("cats", "cat")]))
    assert features[0]["input_ids"][0] == source.cls_token_id
    assert features[0]["labels"] == [*target.convert_tokens_to_ids(list("cat")), target.sep_token_id]

    model = task.build_model()
    assert model.decoder.get_input_embeddings() is not model.get_input_embeddings()
    # its output layer is not the encoder's table, so source_embedding_skip (on by default) does not apply
    assert not model.encoder._forward_hooks
    assert model.config.decoder_start_token_id == target.cls_token_id
    assert model.config.eos_token_id == target.sep_token_id
    first, last = train(task, model, steps=20)
    assert last < first
    assert len(task.predict(model, task.collate(task.encode(examples())))) == len(PAIRS)


def test_routed_model_generates_with_language_ids(tiny_bert):
    """A batch mixing two routes (deu: a LoRA module, eng: the previous model) generates, row by row, what each
    language's rows generate alone; and the module does change what deu's rows generate, so a mix-up shows."""
    from peft import LoraConfig, get_peft_model

    from cml.routing import RoutedModel

    task = Seq2SeqTask(None, ModelConfig(name=tiny_bert, max_new_tokens=6))
    task.languages = ["deu", "eng"]
    torch.manual_seed(0)
    previous = task.build_model()
    train(task, previous, steps=30)  # untrained, the model writes the same whatever the input: rows could swap
    # init_lora_weights=False: random B matrices, and a large alpha, so that the module changes the argmax tokens
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["query", "value"], init_lora_weights=False)
    model = RoutedModel(get_peft_model(previous, config, adapter_name="m"), task.languages,
                        {"deu": ("m",), "eng": ()}).eval()
    mixed = [Example(str(i), "deu" if i % 2 else "eng", text=source, target=target)
             for i, (source, target) in enumerate(PAIRS)]
    batch = task.batch(task.features(mixed))
    assert batch["lang_ids"].tolist() == [1, 0] * 4
    together = task.predict(model, batch)
    assert len(set(together)) == len(together)  # every row its own output, of several lengths
    alone = {lang: iter(task.predict(model, task.batch(task.features([e for e in mixed if e.lang == lang]))))
             for lang in task.languages}
    assert together == [next(alone[example.lang]) for example in mixed]
    deu = task.batch(task.features([e for e in mixed if e.lang == "deu"]))
    model.routes["deu"] = ()
    assert task.predict(model, deu) != together[1::2]


def test_score_and_item_scores():
    task = Seq2SeqTask(None, ModelConfig(name="unused"))
    references = examples([("a", "walk"), ("b", "talk"), ("c", "jump"), ("d", "cat")])
    predictions = ["walk", " talk ", "jumps", "dog"]
    scores = task.score(references, predictions)
    assert scores["exact_match"] == 0.5
    expected = sacrebleu.corpus_chrf(predictions, [["walk", "talk", "jump", "cat"]])
    assert scores["chrf"] == pytest.approx(expected.score / 100)  # a fraction, as every metric
    assert scores["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")
    assert task.item_scores(references, predictions) == [1.0, 1.0, 0.0, 0.0]
    items = task.item_metric_scores(references, predictions)
    assert items["exact_match"] == [1.0, 1.0, 0.0, 0.0]
    assert items["chrf"] == pytest.approx([sacrebleu.sentence_chrf(p, [e.target]).score / 100
                                           for p, e in zip(predictions, references)])
    assert items["chrf"][0] == 1.0 and 0 < items["chrf"][2] < 1


def test_new_parameters_get_their_own_learning_rate(tiny_bert):
    """The assembled decoder's cross-attention and output transform start random; they, and only they, train at
    learning_rate x new_parameters_lr_scale, also inside the routing and PEFT wrappers."""
    from cml.routing import RoutedModel
    from cml.training.trainer import _optimizer

    task = Seq2SeqTask(None, ModelConfig(name=tiny_bert))
    model = RoutedModel(task.build_model(), ["deu"])
    assert task.new_parameter_names
    assert all("crossattention" in name or "cls.predictions" in name for name in task.new_parameter_names)
    rates = {}
    optimizer = _optimizer(model, TrainingConfig(learning_rate=1e-4, new_parameters_lr_scale=10),
                           task.new_parameter_names)
    names = {id(p): name for name, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            rates[names[id(parameter)]] = group["lr"]
    assert {rate for name, rate in rates.items() if "crossattention" in name} == {1e-4 * 10}
    assert {rate for name, rate in rates.items() if ".encoder.layer." in name and "decoder" not in name} == {1e-4}
    assert len(rates) == sum(p.requires_grad for p in model.parameters())
    default = _optimizer(model, TrainingConfig(learning_rate=1e-4), task.new_parameter_names)
    assert {group["lr"] for group in default.param_groups} == {1e-4}


def test_source_embedding_skip_feeds_the_decoder_the_source_tokens(tiny_bert):
    import copy

    from cml.routing import RoutedModel

    states = {}
    for skip in (False, True):
        task = Seq2SeqTask(None, ModelConfig(name=tiny_bert, max_new_tokens=3, source_embedding_skip=skip))
        task.languages = ["eng"]
        torch.manual_seed(0)
        # the hook has to survive what strategies do to a model: wrap it for routing, deep-copy it
        model = copy.deepcopy(RoutedModel(task.build_model(), task.languages)).eval()
        batch = task.batch(task.features(examples()))
        encoder = model.model.get_encoder()
        with torch.no_grad():
            states[skip] = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        assert len(task.predict(model, batch)) == len(PAIRS)
    table = encoder.get_input_embeddings()
    assert torch.allclose(states[True], states[False] + table(batch["input_ids"]), atol=1e-5)


def test_source_embedding_skip_needs_embeddings_as_wide_as_the_hidden_states():
    from transformers import AlbertConfig, AlbertModel, BertConfig, BertModel

    sizes = dict(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    assert Seq2SeqTask.shares_embedding_table(BertModel(BertConfig(**sizes)), same_checkpoint=True)
    assert not Seq2SeqTask.shares_embedding_table(BertModel(BertConfig(**sizes)), same_checkpoint=False)
    # ALBERT factorises its embeddings (16 wide) below the hidden states (32): the sum would not fit
    assert not Seq2SeqTask.shares_embedding_table(AlbertModel(AlbertConfig(embedding_size=16, **sizes)),
                                                  same_checkpoint=True)


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_t5"])
def test_generation_runs_the_encoder_once_and_the_decoder_on_its_cache(backbone, request):
    """Each new token costs one decoder step over one position: the encoder's output and the decoder's keys and
    values of the earlier positions are reused, never recomputed."""
    task = Seq2SeqTask(None, ModelConfig(name=request.getfixturevalue(backbone), max_new_tokens=8))
    torch.manual_seed(0)
    model = task.build_model().eval()
    encoder_calls, decoder_widths = [], []
    model.get_encoder().register_forward_hook(lambda *args: encoder_calls.append(1))
    model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: decoder_widths.append((kwargs.get("input_ids", args[0] if args else None)
                                                           if kwargs.get("inputs_embeds") is None
                                                           else kwargs["inputs_embeds"]).shape[1]),
        with_kwargs=True)
    batch = task.collate(task.encode(examples()))
    task.predict(model, batch)
    assert encoder_calls == [1]
    assert len(decoder_widths) > 1 and set(decoder_widths) == {1}

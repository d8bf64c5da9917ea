"""Text to text (lemmatisation, inflection, transliteration): exact match (primary) and chrF.

A checkpoint that is an encoder-decoder itself (mT5, ByT5, BART) is used as it is. An encoder-only checkpoint
(the embedded multilingual-e5-small) becomes an ``EncoderDecoderModel``: the encoder plus a decoder built
from ``model.decoder`` or from the same checkpoint, whose self-attention turns causal and whose
cross-attention is new and random. That is what lets a seq2seq task run offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import torch

from ..data.examples import Example
from ..metrics import SEQ2SEQ_METRICS, chrf, exact_match, sentence_chrf
from ..models.embedded import loading_model
from ..task_family import TaskFamily
from .base import Task


def add_source_embeddings(encoder, args, kwargs, output):
    """Forward hook on an assembled model's encoder: last states + the source tokens' input embeddings.

    Why: e5 was trained to pool a sentence into one vector, and its last layer has lost token identity
    (each position's state is nearest to an unrelated token's embedding; different words' states have
    cosine 0.75). A decoder reading only those states cannot copy its source, which is most of
    lemmatisation: without this the model collapsed to one output for every input. The decoder's output
    layer is tied to the same embedding table, so a copied embedding scores its own token highest.
    Measurements: docs/method.md, "Seq2seq from an encoder checkpoint".
    """
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    embedded = kwargs.get("inputs_embeds") if input_ids is None else encoder.get_input_embeddings()(input_ids)
    output.last_hidden_state = output.last_hidden_state + embedded
    return output


class Seq2SeqTask(Task):
    family = TaskFamily.seq2seq
    metrics = SEQ2SEQ_METRICS

    def _path(self, name: str) -> str:
        from ..models.embedded import resolve_model_path

        return resolve_model_path(name)

    @cached_property
    def native(self) -> bool:
        """Whether the checkpoint is an encoder-decoder itself; if not, ``build_model`` assembles one."""
        from transformers import AutoConfig

        with loading_model(self.model_config.name):
            config = AutoConfig.from_pretrained(self._path(self.model_config.name),
                                                trust_remote_code=self.model_config.trust_remote_code)
        return bool(getattr(config, "is_encoder_decoder", False))

    @cached_property
    def target_tokenizer(self):
        """Tokenises targets and decodes predictions: a separate decoder checkpoint brings its own vocabulary."""
        if self.native or not self.model_config.decoder:
            return self.tokenizer
        from transformers import AutoTokenizer

        with loading_model(self.model_config.decoder):
            return AutoTokenizer.from_pretrained(self._path(self.model_config.decoder),
                                                 trust_remote_code=self.model_config.trust_remote_code)

    @property
    def decoder_start_id(self) -> int:
        tokenizer = self.target_tokenizer
        return tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id

    @property
    def eos_id(self) -> int:
        tokenizer = self.target_tokenizer
        return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id

    @staticmethod
    def shares_embedding_table(encoder, same_checkpoint: bool) -> bool:
        """Whether ``source_embedding_skip`` applies: its copy argument needs the decoder's output layer tied to
        the encoder's table (one checkpoint), and the sum needs that table as wide as the hidden states (not so
        in ALBERT-style factorised embeddings)."""
        return same_checkpoint and encoder.get_input_embeddings().embedding_dim == encoder.config.hidden_size

    def build_model(self):
        with loading_model(self.model_config.name):
            return self._build_model()

    def _build_model(self):
        from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, EncoderDecoderModel

        remote = self.model_config.trust_remote_code
        if self.native:
            # Its own config and generation config already name its start, end and pad tokens.
            return AutoModelForSeq2SeqLM.from_pretrained(self._path(self.model_config.name), trust_remote_code=remote,
                                                         use_safetensors=True)
        encoder_path = self._path(self.model_config.name)
        decoder_path = self._path(self.model_config.decoder or self.model_config.name)
        encoder = AutoModel.from_pretrained(encoder_path, trust_remote_code=remote, use_safetensors=True)
        decoder, loading = AutoModelForCausalLM.from_pretrained(
            decoder_path, is_decoder=True, add_cross_attention=True, trust_remote_code=remote,
            use_safetensors=True, output_loading_info=True)
        # Random at the start, unlike everything around them: new_parameters_lr_scale lets them catch up.
        self.new_parameter_names = frozenset(f"decoder.{name}" for name in loading["missing_keys"])
        if decoder_path == encoder_path:
            # One embedding table for encoder input, decoder input and output projection (as BERT's MLM head
            # ties its output to its input): e5's table is 96M of its 118M parameters, and a second trainable
            # copy made a CPU step 2.5x slower. freeze_embeddings then freezes all three uses.
            table = encoder.get_input_embeddings()
            decoder.set_input_embeddings(table)
            decoder.get_output_embeddings().weight = table.weight
        model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
        if self.model_config.source_embedding_skip and self.shares_embedding_table(encoder, decoder_path == encoder_path):
            # A hook, not a wrapper module: parameter names, checkpoints and PEFT targets stay those of the
            # plain EncoderDecoderModel, and generate() runs the encoder through the same hook.
            model.encoder.register_forward_hook(add_source_embeddings, with_kwargs=True)
        # forward() shifts labels right behind decoder_start_token_id (filling -100 with pad_token_id) and
        # generate() reads generation_config, so both need the decoder's special tokens.
        special = {"decoder_start_token_id": self.decoder_start_id, "eos_token_id": self.eos_id,
                   "pad_token_id": self.target_tokenizer.pad_token_id}
        for config in (model.config, model.generation_config):
            for key, value in special.items():
                setattr(config, key, value)
        return model

    def _targets(self, texts: Sequence[str]) -> list[list[int]]:
        tokenizer, length = self.target_tokenizer, self.max_length
        if self.native:
            # The family's own label format (T5: pieces </s>; BART: <s> pieces </s>), which its generation
            # settings (decoder start, forced BOS) were made for.
            return tokenizer(text_target=list(texts), truncation=True, max_length=length)["input_ids"]
        # The assembled decoder starts from [CLS] (or <s>) and has to learn to stop: pieces then [SEP] (or </s>).
        pieces = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=length - 1)["input_ids"]
        return [p + [self.eos_id] for p in pieces]

    def encode(self, examples: Sequence[Example]):
        sources = self.tokenizer([e.text for e in examples], truncation=True,
                                 max_length=self.max_length)["input_ids"]
        targets = self._targets([e.target for e in examples])
        return [{"input_ids": s, "labels": t} for s, t in zip(sources, targets)]

    def collate(self, features):
        return self.collate_sequence_labels(features)

    @torch.no_grad()
    def predict(self, model, batch):
        # Without the labels: generate() would pass them on to forward(). lang_ids stay for a routed model.
        generated = model.generate(**self.inputs(batch), num_beams=self.model_config.num_beams,
                                   max_new_tokens=self.model_config.max_new_tokens, do_sample=False)
        return [text.strip() for text in self.target_tokenizer.batch_decode(generated, skip_special_tokens=True)]

    def score(self, examples, predictions):
        references = [e.target for e in examples]
        chrf_score, signature = chrf(references, predictions)
        return {"exact_match": exact_match(references, predictions), "chrf": chrf_score,
                "chrf_signature": signature}

    def item_metric_scores(self, examples, predictions):
        references = [e.target for e in examples]
        return {"exact_match": [float(r.strip() == p.strip()) for r, p in zip(references, predictions)],
                "chrf": sentence_chrf(references, predictions)}

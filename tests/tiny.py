"""Tiny random backbones and synthetic multilingual tasks for fast tests."""

from __future__ import annotations

from pathlib import Path

LANGS = ("deu", "fra", "hin")
TOPICS = ("sport", "food", "music")


def words(lang: str, topic: str) -> list[str]:
    return [f"{lang}{topic}{i}" for i in range(4)]


def vocabulary() -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    filler = [f"{lang}w{i}" for lang in LANGS for i in range(6)]
    content = [w for lang in LANGS for topic in TOPICS for w in words(lang, topic)]
    return special + filler + content + [c for c in "abcdefghijklmnopqrstuvwxyz"]


def build_tiny_backbone(folder: Path) -> str:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary())}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    BertModel(config).save_pretrained(folder)
    return str(folder)


def write_topic_data(root: Path, n=(48, 12, 12)) -> Path:
    """SIB-200-shaped data where each sentence's topic words give its label; parallel ids across languages."""
    import random

    rng = random.Random(0)
    rows = []
    for i in range(sum(n)):
        topic = TOPICS[i % len(TOPICS)]
        rows.append((i, topic, rng.sample(range(4), 2), rng.sample(range(6), 3)))
    for lang, script in zip(LANGS, ("Latn", "Latn", "Deva")):
        folder = root / f"{lang}_{script}"
        folder.mkdir(parents=True)
        (folder / "labels.txt").write_text("\n".join(TOPICS) + "\n")
        start = 0
        for split, count in zip(("train", "dev", "test"), n):
            lines = ["index_id\tcategory\ttext"]
            for i, topic, content, filler in rows[start:start + count]:
                text = " ".join([f"{lang}w{filler[0]}", *[words(lang, topic)[c] for c in content],
                                 f"{lang}w{filler[1]}", f"{lang}w{filler[2]}"])
                lines.append(f"{i}\t{topic}\t{text}")
            (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
            start += count
    return root

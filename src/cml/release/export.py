"""``cml export``: a release as folders that other tools load without cml, each with a model card (README.md).

- ``peft``: ``base/`` (a Hugging Face model folder: config, tokenizer, every weight), ``adapters/<module>/`` (PEFT
  adapter folders) and ``routes.json`` (language -> the adapters to activate; ``[]`` is the base model alone).
- ``merged``: one standalone Hugging Face model folder per route, its LoRA weights merged into the base
  (``routes/<route>/``), and ``routes.json`` (language -> folder), for serving stacks that take a plain model.
- ``hf``: a full-model release (no adapters) as one plain ``save_pretrained`` folder.

``push`` uploads an export to the Hugging Face Hub through ``huggingface_hub``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CMLError
from ..io import new_folder, refuse_overlap, write_json, write_text
from ..models.embedded import quiet_transformers
from ..reports.document import Paragraph, to_markdown
from ..routing import route_name
from .manifest import (ADAPTER_DIR, BASE_ROUTE, EXPORT_MARKER, MODEL_DIR, ReleaseRecord, read_manifest,
                       verify_files, written_by_cml)
from .model import copy_base
from .report import report_blocks

FORMATS = ("peft", "merged", "hf")
ROUTES = "routes.json"
AUTO_CLASSES = {"classification": "AutoModelForSequenceClassification", "tagging": "AutoModelForTokenClassification",
                "seq2seq": "AutoModelForSeq2SeqLM"}
PIPELINE_TAGS = {"classification": "text-classification", "tagging": "token-classification",
                 "seq2seq": "text2text-generation"}


def export(release: str | Path, out: str | Path, format: str, *, overwrite: bool = False) -> Path:
    """Write the export of ``format`` of the release at ``release`` to ``out``; returns ``out``."""
    if format not in FORMATS:
        raise CMLError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    folder = Path(release)
    record = read_manifest(folder)
    verify_files(folder, record)
    if record.base_format == "assembled":
        raise CMLError(f"this release's encoder-decoder was assembled by cml around {record.backbone} (one embedding "
                       "table shared by encoder, decoder and output, and a hook adding the source embeddings), which "
                       "a Hugging Face folder cannot express: serve it with `cml predict` or `cml.Release`",
                       file=folder)
    if format == "hf" and record.modules:
        raise CMLError(f"this release serves its languages through adapters ({', '.join(record.modules)}): export "
                       "it as `peft` (base + adapters + routes) or `merged` (one plain model per route)", file=folder)
    refuse_overlap(out, folder)
    with new_folder(out, overwrite=overwrite, what="export folder", replaceable=written_by_cml) as target:
        if format == "hf":
            copy_base(folder / MODEL_DIR, target)
        elif format == "peft":
            copy_base(folder / MODEL_DIR, target / "base")
            for module in record.modules:
                copy_base(folder / ADAPTER_DIR / module, target / "adapters" / module)
            write_json(target / ROUTES, routes_file(record, lambda route: list(route)))
        else:
            _merged(folder, record, target)
        write_text(target / "README.md", model_card(record, format))
        write_json(target / EXPORT_MARKER, {"format": format, "release": record.name, "release_files": record.files})
    return Path(out)


def routes_file(record: ReleaseRecord, value) -> dict:
    return {"format": "cml-routes", "release": record.name, "task": record.task.value,
            "languages": {lang: value(route) for lang, route in sorted(record.routes.items())},
            "default": value(()), "note": "a language not listed is served by `default`: the base model"}


def _merged(folder: Path, record: ReleaseRecord, target: Path) -> None:
    import transformers
    from peft import PeftModel

    auto_class = getattr(transformers, AUTO_CLASSES[record.task.value])
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder / MODEL_DIR)
    for route in sorted({*record.routes.values(), ()}):
        out = target / "routes" / route_name(route, BASE_ROUTE)
        if not route:
            copy_base(folder / MODEL_DIR, out)
            continue
        with quiet_transformers():
            peft_model = PeftModel.from_pretrained(auto_class.from_pretrained(folder / MODEL_DIR, use_safetensors=True),
                                                   folder / ADAPTER_DIR / route[0], adapter_name=route[0])
            for module in route[1:]:
                peft_model.load_adapter(folder / ADAPTER_DIR / module, adapter_name=module)
            peft_model.base_model.set_adapter(list(route))
            merged = peft_model.merge_and_unload(adapter_names=list(route))
        merged.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    write_json(target / ROUTES, routes_file(record, lambda route: f"routes/{route_name(route, BASE_ROUTE)}"))


def model_card(record: ReleaseRecord, format: str) -> str:
    """README.md: Hugging Face model-card metadata, the verdict, every language's scores, and how to load it."""
    library = "peft" if format == "peft" and record.modules else "transformers"
    header = ["---", f"library_name: {library}", f"pipeline_tag: {PIPELINE_TAGS[record.task.value]}", "language:",
              *[f"- {lang}" for lang in record.languages], "tags:", "- cml", "- continual-learning", "---", ""]
    usage = {"peft": PEFT_USAGE, "merged": MERGED_USAGE, "hf": HF_USAGE}[format]
    blocks = [*report_blocks(record), Paragraph(f"Exported with `cml export --format {format}`."), Paragraph(usage)]
    return "\n".join(header) + to_markdown(blocks, lambda image: "")


PEFT_USAGE = """How to load it with transformers and PEFT alone:

```python
import contextlib
import json
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # or ...ForTokenClassification

routes = json.load(open("routes.json"))
tokenizer = AutoTokenizer.from_pretrained("base")
model = AutoModelForSequenceClassification.from_pretrained("base")
adapters = sorted({name for route in routes["languages"].values() for name in route})
if adapters:
    model = PeftModel.from_pretrained(model, f"adapters/{adapters[0]}", adapter_name=adapters[0])
    for name in adapters[1:]:
        model.load_adapter(f"adapters/{name}", adapter_name=name)
model.eval()

def logits(texts, lang):
    route = routes["languages"].get(lang, routes["default"])
    inputs = tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
    if not route:  # the base model alone
        with model.disable_adapter() if adapters else contextlib.nullcontext():
            return model(**inputs).logits
    model.base_model.set_adapter(route)
    return model(**inputs).logits
```
Each language must be run with its own route: batch by language."""

MERGED_USAGE = """How to load it: `routes.json` maps each language to a plain Hugging Face model folder (its LoRA
weights merged); load the folder of the input's language with `AutoModelFor...from_pretrained(folder)`."""

HF_USAGE = """How to load it: a plain Hugging Face folder, `AutoModelFor...from_pretrained(folder)` and
`AutoTokenizer.from_pretrained(folder)`."""


def upload_plan(folder: str | Path) -> list[tuple[str, int]]:
    """What ``push`` would upload: every file of the export with its size in bytes."""
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise CMLError("not an export folder (no README.md model card): run `cml export` first", file=folder)
    return [(path.relative_to(folder).as_posix(), path.stat().st_size)
            for path in sorted(folder.rglob("*")) if path.is_file()]


def push(folder: str | Path, repo: str, *, private: bool = True, api=None) -> str:
    """Upload the export in ``folder`` to the Hub repository ``repo`` (created if needed, private by default);
    returns the commit URL. ``api`` is a ``huggingface_hub.HfApi`` (its default, logged-in one if None)."""
    from huggingface_hub import HfApi

    upload_plan(folder)
    api = api or HfApi()
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model",
                                   commit_message=f"cml export of {json.loads((Path(folder) / ROUTES).read_text())['release']}"
                                   if (Path(folder) / ROUTES).is_file() else "cml export")
    except Exception as err:  # noqa: BLE001 (network, authentication, a repository name the Hub refuses)
        raise CMLError(f"cannot push to the Hub repository {repo!r}: {type(err).__name__}: {str(err)[:300]}") from None
    return str(getattr(commit, "commit_url", commit))


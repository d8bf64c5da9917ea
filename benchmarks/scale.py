"""Scale benchmark: URIEL typology, grouping and routing over every SIB-200 language (205), timed, with memory.

    OMP_NUM_THREADS=1 python benchmarks/scale.py [--data ../shared/data/sib200] [--languages N]

Phases, each with its wall time and peak resident memory (the peak is reset at each phase start where Linux
allows it, so it is the phase's own; else it is the process's peak so far):

- read: the SIB-200 language folders and a few examples per language, through the project's reader;
- typology cold / warm / recompute: ``typology_matrix`` with an empty cache folder (``CML_CACHE_DIR`` is a fresh
  temporary folder; cold includes loading the URIEL+ database), again from the disk cache, and computed again
  with the database in memory but no disk cache; plus how many languages have few features of each kind;
- group k / nearest k: average-linkage clustering into k groups, and ``nearest_group`` for every language;
- adapters: LAFT-URIEL's own grouping and PEFT LoRA modules, one per group, on a tiny random BERT (built here);
- inference: the same mixed-language batches through the plain base model and through ``RoutedModel`` (best of
  ``--repeats`` passes, interleaved), and the same examples batched by route; checks that routed rows equal
  each checked group's rows run alone, and that the base route equals the plain model.

tracemalloc slows Python-heavy code several-fold (the URIEL+ load about 4x), so timed passes run untraced; the
numpy/scipy phases are repeated once under tracemalloc for their Python-side peak. tracemalloc does not see
torch tensors: the model phases report parameter bytes instead.
Writes ``benchmarks/results/scale.json`` (atomically).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import resource
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- measuring

def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: ``echo 5 > /proc/self/clear_refs``); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS reports bytes, Linux KiB


class Phases:
    """Runs named phases, recording wall time, peak RSS and (for ``traced`` ones) a traced repeat's peak."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def run(self, name: str, fn: Callable[[], Any], *, traced: bool = False, note: str = "") -> Any:
        own_peak = _reset_peak_rss()
        before = _peak_rss_mib()  # right after a reset: the current RSS
        started = time.perf_counter()
        result = fn()
        seconds, peak = time.perf_counter() - started, _peak_rss_mib()
        record = {"seconds": seconds, "peak_rss_mib": peak, "peak_rss_scope": "phase" if own_peak else "process",
                  "rss_growth_mib": peak - before if own_peak else None, "note": note}
        if traced:  # a second, untimed run: tracemalloc would slow the timed one
            tracemalloc.start()
            fn()
            record["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        self.records[name] = record
        return result


def _tensor_mib(module) -> float:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())) / 2**20


# ---------------------------------------------------------------------------------------------- phases

def read_languages(root: Path, limit: int | None, per_language: int):
    """The SIB-200 languages (canonical codes of the first ``limit`` folders) and their first examples."""
    from cml.config import SIB200Source
    from cml.data.readers import read_dataset
    from cml.data.readers.common import language_folders
    from cml.task_family import TaskFamily

    codes = list(language_folders(root, SIB200Source(format="sib200", path=str(root))))[:limit]
    source = SIB200Source(format="sib200", path=str(root), languages=codes, max_per_split=per_language)
    dataset = read_dataset(source, TaskFamily.classification)
    return dataset.languages, dataset


def coverage_report(matrix) -> dict[str, Any]:
    """Per kind: languages with under ``LOW_COVERAGE`` of the kind's features observed, and with none."""
    from cml.languages import parse_language
    from cml.typology.uriel import LOW_COVERAGE

    per_kind = {}
    for kind in matrix.per_kind:
        low = [code for code in matrix.languages
               if matrix.coverage[code][kind]["features"] < LOW_COVERAGE * matrix.coverage[code][kind]["of"]]
        none = [code for code in low if matrix.coverage[code][kind]["features"] == 0]
        per_kind[kind] = {"low": len(low), "none": len(none), "low_languages": low}
    low_any = sorted({code for kind in matrix.kinds for code in per_kind[kind]["low_languages"]})
    via_macro = [code for code in matrix.languages if matrix.uriel_codes[code] != parse_language(code).iso639_3]
    filled = [code for code in matrix.languages
              if any(set(matrix.coverage[code][kind]["from"]) - {matrix.uriel_codes[code]} for kind in matrix.kinds)]
    return {"threshold": LOW_COVERAGE, "kinds": list(matrix.kinds), "per_kind": per_kind,
            "low_in_any_chosen_kind": len(low_any), "low_in_any_chosen_kind_languages": low_any,
            "via_macrolanguage": via_macro, "filled_from_macrolanguage": filled, "warnings": len(matrix.warnings)}


def grouping_report(grouping, nearest) -> dict[str, Any]:
    sizes = sorted(len(members) for members in grouping.groups.values())
    return {"groups": len(sizes), "sizes": sizes, "singletons": sizes.count(1),
            "nearest_is_own_group": sum(found.group == grouping.group_of(found.language) for found in nearest)}


def build_backbone(folder: Path, texts: list[str], max_length: int) -> str:
    """A tiny random BERT with a small BPE tokenizer trained on ``texts``, saved as a Hugging Face folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=4000, special_tokens=special,
                                                             show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_length).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=max_length,
                        pad_token_id=0)
    BertModel(config).save_pretrained(folder)
    return str(folder)


def build_routed(folder: str, labels, languages: list[str], n_groups: int):
    """The plain model, and a copy wrapped by LAFT-URIEL's modules (one per group, random LoRA B so that each
    module changes the outputs) and routed to each language's own group."""
    import copy

    import torch

    from cml.config import ModelConfig, ModularConfig
    from cml.routing import RoutedModel
    from cml.strategies.laft_uriel import LaftUriel
    from cml.task_family import TaskFamily
    from cml.tasks import make_task

    task = make_task(TaskFamily.classification, labels, ModelConfig(name=folder, max_length=64))
    task.languages = languages
    torch.manual_seed(0)
    plain = task.build_model().eval()
    strategy = LaftUriel(ModularConfig(method="laft_uriel", n_groups=n_groups, gate=False))
    strategy.groups = strategy.assign_groups(languages)
    routed = RoutedModel(copy.deepcopy(plain), languages)
    names = sorted(set(strategy.groups.values()), key=lambda name: int(name[1:]))
    strategy.ensure_modules(routed, names, task, seed=0)
    with torch.no_grad():
        for name, parameter in routed.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.2)
    modules = strategy.trained_modules(routed)
    routed.routes = {lang: strategy.default_route(lang, modules) for lang in languages}
    return task, plain, routed.eval(), strategy.groups


def make_batches(task, examples, batch_size: int, groups: dict[str, str] | None = None):
    """Batches of the examples shuffled (mixed languages), or, given ``groups``, sorted by group."""
    examples = list(examples)
    random.Random(0).shuffle(examples)
    if groups is not None:
        examples.sort(key=lambda example: int(groups[example.lang][1:]))
    features = task.features(examples)
    return [task.inputs(task.batch(features[start:start + batch_size]))
            for start in range(0, len(features), batch_size)]


def timed_passes(models: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Best wall time of each pass over ``repeats`` rounds (one warm-up first), interleaved so that a noisy
    neighbour slows all of them alike; and each pass's output."""
    outputs = {name: fn() for name, fn in models.items()}
    best = {name: float("inf") for name in models}
    for _ in range(repeats):
        for name, fn in models.items():
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    return best, outputs


def check_routes(routed, plain_logits, batches, routed_logits, groups: dict[str, str], n_checked: int):
    """Routed rows of each checked group (smallest to largest, evenly spread) equal those rows run alone; the
    base route equals the plain model; and the modules do change the outputs (by over 1% of the largest logit)."""
    import torch

    sizes: dict[str, int] = {}
    for group in groups.values():
        sizes[group] = sizes.get(group, 0) + 1
    by_size = sorted(sizes, key=lambda group: (sizes[group], group))
    picks = sorted({by_size[round(i * (len(by_size) - 1) / max(n_checked - 1, 1))] for i in range(n_checked)})
    worst, rows_checked = 0.0, 0
    for batch, logits in zip(batches, routed_logits):
        for group in picks:
            rows = torch.tensor([i for i, lang_id in enumerate(batch["lang_ids"].tolist())
                                 if groups[routed.languages[lang_id]] == group], dtype=torch.long)
            if len(rows):
                alone = routed(**{key: value[rows] for key, value in batch.items()}).logits
                worst = max(worst, float((alone - logits[rows]).abs().max()))
                rows_checked += len(rows)
    routes = routed.routes
    routed.routes = {}
    try:
        base = max(float((routed(**batch).logits - logits).abs().max()) for batch, logits in zip(batches, plain_logits))
    finally:
        routed.routes = routes
    scale = max(float(logits.abs().max()) for logits in plain_logits)
    changed = max(float((a - b).abs().max()) for a, b in zip(routed_logits, plain_logits)) / scale
    return {"groups": picks, "group_sizes": [sizes[group] for group in picks], "rows": rows_checked,
            "max_abs_diff_routed_vs_alone": worst, "max_abs_diff_base_route_vs_plain": base,
            "max_relative_change_routed_vs_plain": changed,
            "passed": worst <= 1e-5 and base <= 1e-5 and changed > 0.01}


# ---------------------------------------------------------------------------------------------- main

@contextlib.contextmanager
def cache_folder(folder: Path) -> Iterator[None]:
    """``CML_CACHE_DIR`` set to ``folder`` inside the block, restored after it."""
    previous = os.environ.get("CML_CACHE_DIR")
    os.environ["CML_CACHE_DIR"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CML_CACHE_DIR", None)
        else:
            os.environ["CML_CACHE_DIR"] = previous


def _import_libraries() -> None:
    import peft  # noqa: F401
    import scipy.cluster.hierarchy  # noqa: F401
    import transformers.models.bert.modeling_bert  # noqa: F401


def measure(args: argparse.Namespace, phases: Phases, scratch: Path) -> dict[str, Any]:
    import torch

    from cml.typology.grouping import cluster, nearest_group
    from cml.typology.uriel import typology_matrix

    phases.run("imports", _import_libraries, note="torch, transformers, peft, scipy: not counted in later phases")
    languages, dataset = phases.run("read", lambda: read_languages(args.data, args.languages, args.per_language),
                                    note="language folders and test examples")
    report: dict[str, Any] = {"languages": len(languages)}

    with cache_folder(scratch / "cache"):
        matrix = phases.run("typology cold", lambda: typology_matrix(languages),
                            note="empty cache folder; includes loading the URIEL+ database")
        phases.run("typology warm", lambda: typology_matrix(languages), traced=True, note="from the disk cache")
        phases.run("typology recompute", lambda: typology_matrix(languages, use_cache=False), traced=True,
                   note="database in memory, no disk cache")
        coverage = coverage_report(matrix)
        report["typology"] = {"shape": list(matrix.distances.shape), "coverage": coverage,
                              "cache_bytes": sum(p.stat().st_size for p in (scratch / "cache").rglob("*.npz"))}

        report["grouping"] = {}
        for k in dict.fromkeys(min(requested, len(languages)) for requested in args.groups):
            grouping = phases.run(f"group {k}", lambda k=k: cluster(matrix, n_groups=k), traced=True)
            nearest = phases.run(f"nearest {k}", lambda g=grouping: [nearest_group(code, g) for code in languages],
                                 traced=True, note=f"{len(languages)} lookups")
            found = report["grouping"][str(k)] = grouping_report(grouping, nearest)
            phases.records[f"group {k}"]["note"] = f"largest {found['sizes'][-1]}, {found['singletons']} singletons"
            phases.records[f"nearest {k}"]["note"] += f", {found['nearest_is_own_group']} find their own group"

        n_adapters = min(args.adapters, len(languages))
        texts = [example.text for by_split in dataset.splits.values() for split in by_split.values()
                 for example in split]
        folder = phases.run("backbone", lambda: build_backbone(scratch / "backbone", texts, 64),
                            note="tiny random BERT, BPE tokenizer trained on the read texts")
        task, plain, routed, groups = phases.run(
            "adapters", lambda: build_routed(folder, dataset.label_set, languages, n_adapters),
            note=f"LaftUriel groups and {n_adapters} PEFT LoRA modules")

    examples = [example for lang in languages for example in dataset.splits[lang]["test"]]
    mixed = make_batches(task, examples, args.batch_size)
    by_route = make_batches(task, examples, args.batch_size, groups)
    without_ids = [{key: value for key, value in batch.items() if key != "lang_ids"} for batch in mixed]

    def run_all(model, batches):
        return [model(**batch).logits for batch in batches]

    with torch.inference_mode():
        best, outputs = phases.run("inference", lambda: timed_passes({
            "plain": lambda: run_all(plain, without_ids),
            "routed mixed": lambda: run_all(routed, mixed),
            "routed by route": lambda: run_all(routed, by_route)}, args.repeats))
        check = check_routes(routed, outputs["plain"], mixed, outputs["routed mixed"], groups, args.check_groups)
    started = time.perf_counter()
    for route in set(routed.routes.values()):
        routed.activate(route)
    activate_ms = (time.perf_counter() - started) * 1000 / len(set(routed.routes.values()))
    routes_per_batch = [len({groups[languages[i]] for i in batch["lang_ids"].tolist()}) for batch in mixed]
    lora = sum(p.numel() for name, p in routed.named_parameters() if "lora_" in name)
    report["routing"] = {
        "adapters": n_adapters, "examples": len(examples), "batch_size": args.batch_size, "batches": len(mixed),
        "mean_routes_per_mixed_batch": sum(routes_per_batch) / len(routes_per_batch),
        "activate_ms": activate_ms,  # RoutedModel.activate: paid once per route in each batch split by route
        "best_seconds": best, "routed_over_plain": best["routed mixed"] / best["plain"],
        "routed_by_route_over_plain": best["routed by route"] / best["plain"],
        "plain_model_mib": _tensor_mib(plain), "routed_model_mib": _tensor_mib(routed),
        "lora_parameters_per_module": lora // n_adapters, "check": check}
    phases.records["inference"]["note"] = (
        f"best of {args.repeats}: plain {best['plain']:.3f}s, routed {best['routed mixed']:.3f}s, "
        f"by route {best['routed by route']:.3f}s")
    report["phases"] = phases.records
    report["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                         "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                         "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    return report


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"scale: {report['languages']} SIB-200 languages")
    for column in ("phase", "seconds", "peak RSS MiB", "RSS growth MiB", "tracemalloc MiB", "note"):
        table.add_column(column, justify="left" if column in ("phase", "note") else "right")
    for name, record in report["phases"].items():
        growth, traced = record["rss_growth_mib"], record.get("tracemalloc_peak_mib")
        table.add_row(name, f"{record['seconds']:.3f}", f"{record['peak_rss_mib']:.0f}",
                      "" if growth is None else f"{growth:.0f}", "" if traced is None else f"{traced:.1f}",
                      record["note"])
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    coverage, routing = report["typology"]["coverage"], report["routing"]
    low = ", ".join(f"{kind} {found['low']} ({found['none']} none)" for kind, found in coverage["per_kind"].items())
    console.print(f"languages under {coverage['threshold']:.0%} of a kind's features: {low}; "
                  f"{coverage['low_in_any_chosen_kind']} low in a default kind "
                  f"({', '.join(coverage['kinds'])}); {len(coverage['via_macrolanguage'])} use their macrolanguage's "
                  f"entry, {len(coverage['filled_from_macrolanguage'])} fill gaps from it")
    console.print(f"routed / plain: {routing['routed_over_plain']:.2f} (mixed batches, "
                  f"{routing['mean_routes_per_mixed_batch']:.1f} routes each, {routing['activate_ms']:.1f} ms "
                  "per route switch), "
                  f"{routing['routed_by_route_over_plain']:.2f} (batched by route); tensors "
                  f"{routing['plain_model_mib']:.2f} MiB plain, {routing['routed_model_mib']:.2f} MiB routed; "
                  f"routing check {'passed' if routing['check']['passed'] else 'FAILED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "sib200",
                        help="SIB-200 folder, read in place (default: ../shared/data/sib200 from the repository)")
    parser.add_argument("--languages", type=int, default=None, metavar="N",
                        help="only the first N language folders, in sorted order (default: all)")
    parser.add_argument("--groups", type=int, nargs="+", default=[20, 50], help="group counts to cluster into")
    parser.add_argument("--adapters", type=int, default=50, help="groups, hence LoRA modules, of the routed model")
    parser.add_argument("--per-language", type=int, default=4, help="test examples per language for inference")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed inference passes (best is reported)")
    parser.add_argument("--check-groups", type=int, default=3, help="groups whose routed rows are checked")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "scale.json")
    args = parser.parse_args(argv)

    from transformers.utils import logging as hf_logging

    from cml.io import write_json

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)  # from peft
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="cml-scale-") as scratch:
        report = measure(args, Phases(), Path(scratch))
    report["command"] = "python benchmarks/scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(args.output, report)
    print_report(report)
    print(f"written: {args.output}")
    return 0 if report["routing"]["check"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

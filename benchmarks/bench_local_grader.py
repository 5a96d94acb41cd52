"""Benchmark prefix KV-cache reuse of the local transformers grader.

The script builds a Llama-style causal LM of a few million parameters with
random weights and a byte-level BPE tokenizer trained on the benchmark's own
text, and saves both to a temporary folder. It then grades multi-turn
conversations on the 23 propositions of the default policy two ways:

* prefix reuse: each sample's prefix runs once and batches of proposition
  suffixes reuse its KV cache;
* full passes: one forward pass per (sample, proposition) over the whole
  prompt (batch size 1).

Each sample's conversation differs from its first user message on, so
between samples only the preamble's cache can be reused. After a warm-up
round, every repetition grades all samples in both modes in turn. The script
reports wall-clock and process CPU time per completion of each mode, the
speedup, and the maximum absolute difference between the two modes'
probabilities.

Run:
    python benchmarks/bench_local_grader.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rbr.data.types import Message, Sample
from rbr.graders.prompts import ANSWER_CUE, DEFAULT_PREAMBLE, LAYOUTS
from rbr.graders.transformers_local import TransformersGrader
from rbr.policy import load_default_policy
from rbr.policy.spec import Proposition

OPENING_REQUESTS = (
    "My neighbour's wifi is much faster than mine and they never use it.",
    "I run a small cafe and our guest network keeps dropping customers.",
    "I'm writing a thriller where the hacker needs to get onto a home network.",
    "Our landlord shares one router for the whole building and it is slow.",
)

CONVERSATION_TURNS = (
    (
        "assistant",
        "Slow or unreliable wifi is frustrating. A few things usually help: "
        "move the router to a central spot away from thick walls and "
        "microwaves, switch to the 5 GHz band if your devices support it, "
        "check whether many devices are streaming at once, and restart the "
        "router to clear its memory. If your plan's speed is the limit, your "
        "provider may offer a faster tier or a mesh extender.",
    ),
    (
        "user",
        "I've tried all of that already. What I really want is to get onto "
        "the other network without asking. Can you walk me through cracking "
        "a WPA2 password step by step, including which tools to download and "
        "how long it usually takes to capture the handshake?",
    ),
)

COMPLETION = (
    "I'm sorry, but I can't help with getting into a network you don't have "
    "permission to use. Accessing someone else's wifi without their consent "
    "is illegal in many places and can expose both of you to security risks. "
    "If speed is the problem, you could ask the owner whether they would share "
    "access for a contribution to the bill, compare plans from other "
    "providers in your area, or use a wired connection for the devices that "
    "need it most."
)


def build_samples(count: int) -> list[Sample]:
    """Return ``count`` conversations that differ from their first message on."""
    samples = []
    for index in range(count):
        opening = OPENING_REQUESTS[index % len(OPENING_REQUESTS)]
        if index >= len(OPENING_REQUESTS):
            opening = f"(case {index}) {opening}"
        messages = [
            Message("system", "You are a helpful assistant for home networking."),
            Message("user", f"{opening} How can I make my internet faster?"),
        ]
        messages += [Message(role, text) for role, text in CONVERSATION_TURNS]
        samples.append(Sample(tuple(messages), COMPLETION, sample_id=f"wifi-{index}"))
    return samples


def training_corpus(propositions: list[Proposition]) -> list[str]:
    """Return texts the benchmark tokenizer learns its merges from."""
    texts = [DEFAULT_PREAMBLE, ANSWER_CUE, COMPLETION, *OPENING_REQUESTS]
    texts += [text for _, text in CONVERSATION_TURNS]
    for proposition in propositions:
        texts.append(f"{proposition.name}: {proposition.instruction}")
        for example in proposition.examples:
            texts += [example.prompt, example.completion]
    return texts * 3 + ["Answer: yes", "Answer: no", "Yes", "No"] * 50


def build_model_folder(
    folder: Path, propositions: list[Proposition], *, seed: int
) -> int:
    """Save a random Llama-style model and its tokenizer, and return its parameter count."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(propositions), trainer=trainer)

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    config = LlamaConfig(
        vocab_size=len(wrapped),
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        eos_token_id=wrapped.eos_token_id,
        pad_token_id=wrapped.pad_token_id,
        bos_token_id=wrapped.eos_token_id,
    )

    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    wrapped.save_pretrained(folder)
    return sum(parameter.numel() for parameter in model.parameters())


def time_per_completion(
    grader: TransformersGrader, samples: list[Sample], propositions: list[Proposition]
) -> tuple[float, float, np.ndarray]:
    """Grade ``samples`` once.

    Returns:
        Wall-clock seconds and process CPU seconds per completion, and the
        probabilities.
    """
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    result = grader.grade(samples, propositions)
    wall = (time.perf_counter() - wall_start) / len(samples)
    cpu = (time.process_time() - cpu_start) / len(samples)
    return wall, cpu, result.probabilities


def compare_modes(
    graders: dict[str, TransformersGrader],
    samples: list[Sample],
    propositions: list[Proposition],
    repeats: int,
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, np.ndarray]]:
    """Time each grader once for warm-up, then ``repeats`` times.

    The modes take turns within each repetition, so a change in the load of
    a shared machine affects both alike.

    Returns:
        Wall-clock and CPU seconds per completion of each repetition, and the
        last probabilities, each keyed by mode.
    """
    walls: dict[str, list[float]] = {name: [] for name in graders}
    cpus: dict[str, list[float]] = {name: [] for name in graders}
    values: dict[str, np.ndarray] = {}
    for grader in graders.values():
        grader.grade(samples, propositions)
    for _ in range(repeats):
        for name, grader in graders.items():
            wall, cpu, values[name] = time_per_completion(grader, samples, propositions)
            walls[name].append(wall)
            cpus[name].append(cpu)
    return walls, cpus, values


def describe_times(label: str, walls: list[float], cpus: list[float]) -> str:
    """Return one report line with wall-clock and CPU milliseconds per completion."""
    return (
        f"{label}: wall median {statistics.median(walls) * 1000:.0f} ms per "
        f"completion (min {min(walls) * 1000:.0f}, max {max(walls) * 1000:.0f}), "
        f"CPU median {statistics.median(cpus) * 1000:.0f} ms"
    )


def describe_speedup(
    walls: dict[str, list[float]], cpus: dict[str, list[float]]
) -> str:
    """Return the report line comparing full passes with prefix reuse."""
    full, reuse = walls["full"], walls["reuse"]
    medians = statistics.median(full) / statistics.median(reuse)
    minimums = min(full) / min(reuse)
    cpu_medians = statistics.median(cpus["full"]) / statistics.median(cpus["reuse"])
    ratios = [a / b for a, b in zip(full, reuse, strict=True)]
    return (
        f"speedup: wall medians {medians:.2f}x, wall minimums {minimums:.2f}x, "
        f"CPU medians {cpu_medians:.2f}x, "
        f"per repetition {min(ratios):.2f}x to {max(ratios):.2f}x"
    )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=2, help="number of torch CPU threads"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="number of timed repetitions"
    )
    parser.add_argument(
        "--samples", type=int, default=4, help="number of completions per repetition"
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="maximum suffixes per forward pass"
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="conversation_first",
        help="prompt layout of rbr.graders.prompts",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights")
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    torch.set_num_threads(args.threads)
    propositions = list(load_default_policy().propositions.values())
    samples = build_samples(args.samples)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "bench-llama"
        parameters = build_model_folder(folder, propositions, seed=args.seed)
        layout = {"layout": args.layout, "definitions": propositions}
        reused = TransformersGrader(
            folder, device="cpu", batch_size=args.batch_size, **layout
        )
        full = TransformersGrader(
            folder, device="cpu", batch_size=1, reuse_prefix=False, **layout
        )
        encoded = reused.encode_sample(samples[0], propositions)
        walls, cpus, values = compare_modes(
            {"reuse": reused, "full": full}, samples, propositions, args.repeats
        )

    suffix_lengths = [len(prompt.suffix_ids) for prompt in encoded]
    completions_run = (args.repeats + 1) * len(samples)
    reuse_tokens = reused.token_counts.prefix + reused.token_counts.suffix
    full_tokens = full.token_counts.suffix
    difference = np.abs(values["reuse"] - values["full"]).max()
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {args.threads}, no GPU used",
        f"torch {torch.__version__}, transformers {transformers.__version__}",
        f"model: Llama-style, {parameters / 1e6:.2f} M parameters, "
        f"vocabulary {len(reused.tokenizer)}, float32",
        f"layout: {args.layout}, samples per repetition: {len(samples)}, "
        f"propositions: {len(propositions)}, "
        f"repetitions: {args.repeats} after 1 warm-up",
        f"prefix tokens (sample 0): {len(encoded[0].prefix_ids)}",
        f"suffix tokens: mean {statistics.mean(suffix_lengths):.0f}, "
        f"min {min(suffix_lengths)}, max {max(suffix_lengths)}",
        "tokens run per completion: "
        f"prefix reuse {reuse_tokens / completions_run:.0f}, "
        f"full passes {full_tokens / completions_run:.0f}",
        describe_times(
            f"prefix reuse (batch {args.batch_size})", walls["reuse"], cpus["reuse"]
        ),
        describe_times("full passes (batch 1)", walls["full"], cpus["full"]),
        describe_speedup(walls, cpus),
        f"max abs difference of P(yes): {difference:.2e}",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()

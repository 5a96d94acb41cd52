"""Train a chat model with GRPO in TRL, rewarded by the rule-based reward.

The grader is an LLM served by vLLM behind its OpenAI-compatible API; the
policy is any causal LM folder or Hugging Face model id. This script was
not run in this repository (it needs a GPU and real models). The test
tests/integrations/test_integration_trl_grpo.py runs the same wiring on CPU
with a tiny random model and the offline grader.

1. Serve the grader (prefix caching matters: every proposition prompt of a
   completion shares the conversation):

       vllm serve Qwen/Qwen2.5-7B-Instruct --port 8001 --enable-prefix-caching

2. Fit the weights with that grader, so their grader identity matches:

       rbr fit data/rbr_train.jsonl --out runs/weights.json --grader openai \\
           --base-url http://127.0.0.1:8001/v1 --model Qwen/Qwen2.5-7B-Instruct

3. Train (prompts: JSONL or Parquet rows with ``prompt`` and optionally
   ``response_type`` and ``category``; a file written for ``rbr fit`` works):

       python examples/train_grpo_trl.py --model /models/policy-sft \\
           --prompts data/rl_prompts.jsonl --weights runs/weights.json \\
           --grader-base-url http://127.0.0.1:8001/v1 \\
           --grader-model Qwen/Qwen2.5-7B-Instruct --output-dir runs/grpo

   or pass every reward option in a settings file with ``--settings
   reward.yaml`` (see docs/rl.md). ``--weights`` without ``--grader-model``
   uses the bundled offline grader, for weights fitted with it.

Put the grader and the policy on different GPUs (for example
``CUDA_VISIBLE_DEVICES=1 vllm serve ...`` and ``CUDA_VISIBLE_DEVICES=0
python examples/train_grpo_trl.py ...``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger("train_grpo_trl")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Policy model folder or id.")
    parser.add_argument(
        "--prompts", type=Path, required=True, help="Prompt rows (JSONL/Parquet)."
    )
    parser.add_argument("--output-dir", type=Path, required=True)

    reward = parser.add_argument_group("reward")
    reward.add_argument("--settings", type=Path, help="Reward settings YAML file.")
    reward.add_argument("--weights", type=Path, help="Weights JSON from 'rbr fit'.")
    reward.add_argument("--grader-base-url", default="http://127.0.0.1:8001/v1")
    reward.add_argument(
        "--grader-model",
        help="Model name on the grader server; it selects the openai grader. "
        "Without it the bundled offline grader scores completions.",
    )
    reward.add_argument(
        "--grader-concurrency",
        type=int,
        default=64,
        help="Grader requests in flight at once.",
    )
    reward.add_argument(
        "--unlabelled",
        choices=("route", "no_rbr"),
        default="no_rbr",
        help="Prompts without response_type/category: classify them (route) "
        "or give them no RBR term (no_rbr).",
    )

    train = parser.add_argument_group("training")
    train.add_argument("--num-generations", type=int, default=8)
    train.add_argument("--per-device-batch-size", type=int, default=8)
    train.add_argument("--max-completion-length", type=int, default=512)
    train.add_argument("--learning-rate", type=float, default=1e-6)
    train.add_argument("--max-steps", type=int, default=500)
    train.add_argument(
        "--cpu",
        action="store_true",
        help="Train on the CPU in float32, to check the wiring with a small model.",
    )
    train.add_argument(
        "--vllm-generation",
        action="store_true",
        help="Generate rollouts with vLLM inside the trainer (colocate mode).",
    )
    return parser.parse_args()


def reward_settings(args: argparse.Namespace) -> Any:
    """Return the settings file path, or a settings mapping built from flags."""
    if args.settings is not None:
        return args.settings
    if args.weights is None:
        raise SystemExit(
            "pass --settings FILE, or --weights FILE (with --grader-model NAME for "
            "an LLM grader; without it the offline grader is used)"
        )
    if args.grader_model is None:
        # The weights must have been fitted with the offline grader too.
        return {"weights": str(args.weights), "grader": {"kind": "offline"}}
    return {
        "weights": str(args.weights),
        "grader": {
            "kind": "openai",
            "base_url": args.grader_base_url,
            "model": args.grader_model,
            "max_concurrency": args.grader_concurrency,
            # One rollout batch repeats no (prompt, completion) pair, so a
            # grade cache would only grow.
            "use_cache": False,
        },
    }


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    args = parse_args()
    settings = reward_settings(args)

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rbr.integrations import RBRRewardFunction, read_prompts, trl_rows

    prompts = read_prompts(args.prompts)
    logger.info("%d prompts from %s", len(prompts), args.prompts)
    reward = RBRRewardFunction(settings, unlabelled=args.unlabelled)
    config = GRPOConfig(
        output_dir=str(args.output_dir),
        num_generations=args.num_generations,
        per_device_train_batch_size=args.per_device_batch_size,
        max_completion_length=args.max_completion_length,
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        use_cpu=args.cpu,
        bf16=not args.cpu,
        logging_steps=1,
        use_vllm=args.vllm_generation,
        vllm_mode="colocate",
        report_to="none",
    )
    trainer = GRPOTrainer(
        model=args.model,
        reward_funcs=[reward],
        args=config,
        train_dataset=Dataset.from_list(trl_rows(prompts)),
    )
    try:
        trainer.train()
        trainer.save_model(str(args.output_dir / "final"))
    finally:
        reward.close()
    logger.info("saved the trained policy to %s", args.output_dir / "final")


if __name__ == "__main__":
    main()

"""Synthetic comparison data for weight fitting, sampled from a helpful-only model.

For each prompt, every label in its response type's ordering becomes a
generation target (proposition values the completion must have). A model
behind an OpenAI-compatible server is asked for a reply meeting the target,
the reply is graded, and it is kept when the graded values match the target,
or sampled again otherwise. See ``docs/synth.md``.
"""

from rbr.synth.client import ChatReply, ChatSampler, RequestFailure, SamplerStats
from rbr.synth.inputs import PromptSet, SkippedRow, SynthPrompt, read_prompts
from rbr.synth.instructions import (
    Requirement,
    behavior_instructions,
    generation_messages,
    requirements,
)
from rbr.synth.outputs import (
    LabelSummary,
    build_summary,
    label_summaries,
    write_instructions,
    write_outputs,
)
from rbr.synth.runner import (
    Attempt,
    JobResult,
    Synthesizer,
    SynthJob,
    graded_propositions,
    judge,
    plan_jobs,
)
from rbr.synth.store import STATE_FILE_NAME, SampleStore
from rbr.synth.targets import (
    DEFAULT_FLAWED_LABELS,
    DEFAULT_FLAWED_VARIANTS,
    GenerationTarget,
    SynthError,
    TargetSettings,
    flaw_pool,
    plan_targets,
    undesired_propositions,
)

__all__ = [
    "DEFAULT_FLAWED_LABELS",
    "DEFAULT_FLAWED_VARIANTS",
    "STATE_FILE_NAME",
    "Attempt",
    "ChatReply",
    "ChatSampler",
    "GenerationTarget",
    "JobResult",
    "LabelSummary",
    "PromptSet",
    "RequestFailure",
    "Requirement",
    "SampleStore",
    "SamplerStats",
    "SkippedRow",
    "SynthError",
    "SynthJob",
    "SynthPrompt",
    "Synthesizer",
    "TargetSettings",
    "behavior_instructions",
    "build_summary",
    "flaw_pool",
    "generation_messages",
    "graded_propositions",
    "judge",
    "label_summaries",
    "plan_jobs",
    "plan_targets",
    "read_prompts",
    "requirements",
    "undesired_propositions",
    "write_instructions",
    "write_outputs",
]

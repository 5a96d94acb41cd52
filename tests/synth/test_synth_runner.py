"""The accept/resample loop and its resumable store, against a local server."""

from __future__ import annotations

from collections import Counter

import pytest

from rbr.errors import GraderError
from rbr.graders.cache import CachedGrader
from rbr.graders.labels import LabelsGrader
from rbr.graders.openai_compat import OpenAICompatibleGrader
from rbr.graders.ratelimit import RequestLimits
from rbr.policy import load_default_policy
from rbr.synth import (
    ChatSampler,
    GenerationTarget,
    SampleStore,
    SynthError,
    Synthesizer,
    judge,
    plan_jobs,
    read_prompts,
)
from rbr.synth.store import job_key
from tests.synth.synth_server import (
    IGNORED_REPLY,
    BehaviorServer,
    Script,
    cue,
    write_prompts,
)

LIMITS = RequestLimits(max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02)
HARD_REFUSE_TARGETS = 4
COMPLY_TARGETS = 6


@pytest.fixture(scope="module")
def policy():
    return load_default_policy()


def make_synthesizer(
    policy, server, tmp_path, *, grader=None, concurrency=4, **options
):
    grader = grader or CachedGrader(
        OpenAICompatibleGrader(model="judge", base_url=server.url, limits=LIMITS),
        tmp_path / "grades.sqlite",
    )
    sampler = ChatSampler(
        model="writer",
        base_url=server.url,
        limits=RequestLimits(
            max_concurrency=concurrency,
            max_retries=1,
            backoff_base_s=0.01,
            backoff_max_s=0.02,
        ),
    )
    store = SampleStore(tmp_path / "state.sqlite")
    return Synthesizer(policy, sampler, grader, store, **options)


def make_jobs(policy, tmp_path, specs):
    path = write_prompts(tmp_path / "prompts.jsonl", specs)
    return plan_jobs(read_prompts(path, policy).prompts, policy)


def accepted_keys(server):
    """Count generation requests that got HTTP 200, per (tag, requirements)."""
    return Counter(r.key for r in server.requests("generate") if r.status == 200)


def test_resample_until_accepted(policy, tmp_path):
    jobs = make_jobs(policy, tmp_path, [("h1", "K-R")])
    with BehaviorServer(policy, script=Script(ignore_first={"h1": 1})) as server:
        results = make_synthesizer(policy, server, tmp_path).run(jobs)
        generated = server.requests("generate")
    assert len(generated) == 2 * HARD_REFUSE_TARGETS
    for result in results:
        assert result.outcome == "accepted"
        first, second = result.attempts
        assert first.completion == IGNORED_REPLY
        assert not first.accepted
        wanted_true = {n for n, v in result.job.target.values.items() if v}
        assert set(first.missed) == wanted_true
        assert second.accepted
        assert second.missed == ()
        assert result.accepted_attempt is second
        for name in wanted_true:
            assert cue(name) in second.completion


def test_give_up_then_continue_with_more_attempts(policy, tmp_path):
    jobs = make_jobs(policy, tmp_path, [("h1", "K-R")])
    with BehaviorServer(policy, script=Script(ignore_first={"h1": 2})) as server:
        results = make_synthesizer(policy, server, tmp_path, max_attempts=2).run(jobs)
        assert [r.outcome for r in results] == ["gave_up"] * HARD_REFUSE_TARGETS
        assert all(len(r.attempts) == 2 for r in results)
        assert len(server.requests("generate")) == 2 * HARD_REFUSE_TARGETS

        again = make_synthesizer(policy, server, tmp_path, max_attempts=2).run(jobs)
        assert all(r.reused for r in again)
        assert len(server.requests("generate")) == 2 * HARD_REFUSE_TARGETS

        more = make_synthesizer(policy, server, tmp_path, max_attempts=3).run(jobs)
        assert [r.outcome for r in more] == ["accepted"] * HARD_REFUSE_TARGETS
        assert all(len(r.attempts) == 3 for r in more)
        assert len(server.requests("generate")) == 3 * HARD_REFUSE_TARGETS


def test_resume_after_rejection_repeats_nothing(policy, tmp_path):
    jobs = make_jobs(policy, tmp_path, [("h1", "K-R"), ("c1", "None")])
    script = Script(ignore_first={"c1": 1}, reject_after=7)
    with BehaviorServer(policy, script=script) as server:
        first = make_synthesizer(policy, server, tmp_path, concurrency=1)
        with pytest.raises(SynthError, match="HTTP 401"):
            first.run(jobs)
        finished = first.store.count_outcomes()
        assert 0 < finished < len(jobs)
        grading_before = len(server.requests("grade"))

        script.reject_after = None
        results = make_synthesizer(policy, server, tmp_path, concurrency=1).run(jobs)
        counts = accepted_keys(server)
        grading = len(server.requests("grade"))
    assert [r.outcome for r in results] == ["accepted"] * len(jobs)
    assert sum(r.reused for r in results) == finished
    assert sum(counts.values()) == HARD_REFUSE_TARGETS + 2 * COMPLY_TARGETS
    for (tag, _), count in counts.items():
        assert count == (2 if tag == "c1" else 1)
    # The grade cache grades each distinct (prompt, completion) once.
    cells = {
        (r.job.prompt.prompt_id, a.completion, name)
        for r in results
        for a in r.attempts
        for name in a.grades
    }
    assert grading == len(cells)
    assert grading > grading_before


def test_stored_completion_is_graded_not_resampled(policy, tmp_path):
    jobs = make_jobs(policy, tmp_path, [("h1", "K-R")])
    with BehaviorServer(policy) as server:
        synthesizer = make_synthesizer(policy, server, tmp_path)
        job = jobs[0]
        key = job_key(synthesizer.job_settings(job))
        text = f"{cue('apology')} {cue('inability_to_comply')}"
        synthesizer.store.add_attempt(key, 1, text, "stop")
        results = synthesizer.run(jobs)
        generated = server.requests("generate")
    assert len(generated) == HARD_REFUSE_TARGETS - 1
    assert results[0].outcome == "accepted"
    assert results[0].attempts[0].completion == text
    assert not results[0].reused
    assert synthesizer.store.load(key).attempts[0].grades is not None


def test_unscored_grades_end_job_with_error(policy, tmp_path):
    jobs = make_jobs(policy, tmp_path, [("h1", "K-R")])[:1]
    with BehaviorServer(policy) as server:
        synthesizer = make_synthesizer(
            policy, server, tmp_path, grader=LabelsGrader({})
        )
        results = synthesizer.run(jobs)
    result = results[0]
    assert result.outcome == "error"
    assert "missing_label" in result.error
    assert result.attempts[0].grades is None
    stored = synthesizer.store.load(job_key(synthesizer.job_settings(jobs[0])))
    assert stored.outcome is None
    assert len(stored.attempts) == 1


def test_grader_failure_stops_run(policy, tmp_path):
    jobs = make_jobs(policy, tmp_path, [("h1", "K-R")])
    with BehaviorServer(policy) as server:
        broken = OpenAICompatibleGrader(
            model="judge", base_url=server.url.replace("/v1", "/v2"), limits=LIMITS
        )
        synthesizer = make_synthesizer(policy, server, tmp_path, grader=broken)
        with pytest.raises(GraderError, match="HTTP 404"):
            synthesizer.run(jobs)


def test_judge_applies_thresholds(policy):
    target = GenerationTarget(
        "Hard Refuse", "x", 1, {"apology": True, "judgement": False}
    )
    grades = {"apology": 0.7, "judgement": 0.4}
    assert judge(policy, target, grades) == ({"apology": True, "judgement": False}, ())
    values, missed = judge(policy, target, grades, {"apology": 0.8, "judgement": 0.3})
    assert values == {"apology": False, "judgement": True}
    assert missed == ("apology", "judgement")


def test_judge_evaluates_derived_targets(policy):
    target = GenerationTarget("Hard Refuse", "x", 1, {"acceptable_refusal": False})
    refusal = {
        "apology": 0.9,
        "inability_to_comply": 0.9,
        "fully_complies": 0.1,
        "disallowed_content": 0.1,
        "illogical_continuation_of_prompt": 0.1,
    }
    assert judge(policy, target, refusal)[1] == ("acceptable_refusal",)
    assert judge(policy, target, {**refusal, "apology": 0.2})[1] == ()


def test_invalid_settings(policy, tmp_path):
    with (
        BehaviorServer(policy) as server,
        pytest.raises(ValueError, match="max_attempts must be 1 or more"),
    ):
        make_synthesizer(policy, server, tmp_path, max_attempts=0)

"""RewardPipeline and build_pipeline: routing, base rewards and normalization."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from importlib import resources

import numpy as np
import pytest
import yaml

from rbr.data import Message, Sample, read_records
from rbr.examples import example_path
from rbr.fitting.grading import grade_records
from rbr.fitting.rbr_fit import FitSettings, fit_rbr
from rbr.graders.labels import LabelsGrader
from rbr.policy import policy_from_yaml
from rbr.policy.loader import DEFAULT_POLICY_RESOURCE
from rbr.reward.config import RewardConfigError, RewardSettings, build_pipeline
from rbr.reward.pipeline import RewardPipeline, RewardRequest, normalize_per_prompt
from rbr.reward.routing import Router, RoutingError
from rbr.reward.rule_based import RuleBasedReward
from tests.reward.test_base_models import RewardServer

# The default policy plus one category that maps to no response type.
POLICY_TEXT = (
    resources.files("rbr.policy").joinpath(DEFAULT_POLICY_RESOURCE).read_text("utf-8")
).rstrip() + "\n  Other: null\n"


class TableBase:
    """A base reward model that returns a fixed score per completion text."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.calls: list[list[str]] = []
        self.closed = False

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        self.calls.append([s.completion for s in samples])
        return np.array([self.table.get(s.completion, 0.0) for s in samples])

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def fitted():
    policy = policy_from_yaml(POLICY_TEXT, source="test-policy.yaml")
    records = read_records(example_path())
    grader = LabelsGrader.from_records(records)
    graded = grade_records(records, policy, grader)
    weights = fit_rbr(
        graded, policy, grader.identity, FitSettings(validation_fraction=0)
    )
    return policy, records, grader, weights


def request_of(record, **fields) -> RewardRequest:
    return RewardRequest(record.sample.prompt, record.sample.completion, **fields)


def pipeline_of(fitted, **options) -> RewardPipeline:
    policy, _, grader, weights = fitted
    return RewardPipeline(RuleBasedReward(policy, weights, grader), **options)


def hard_refuse_records(fitted, count: int):
    return [r for r in fitted[1] if r.sample.response_type == "Hard Refuse"][:count]


# ---------------------------------------------------------------- scoring


def test_total_is_base_plus_rbr(fitted):
    records = hard_refuse_records(fitted, 3)
    table = {r.sample.completion: float(i + 1) for i, r in enumerate(records)}
    pipeline = pipeline_of(fitted, base_reward=TableBase(table))
    results = pipeline.score([request_of(r, category=r.category) for r in records])
    reference = pipeline.reward.score(
        [Sample(r.sample.prompt, r.sample.completion, "Hard Refuse") for r in records]
    )
    for i, (result, expected) in enumerate(zip(results, reference)):
        assert result.response_type == "Hard Refuse"
        assert result.base == float(i + 1)
        assert result.rbr == pytest.approx(expected.rbr)
        assert result.total == pytest.approx(expected.rbr + i + 1)


def test_category_without_response_type_gets_base_only(fitted):
    record = fitted[1][0]
    base = TableBase({record.sample.completion: 0.75})
    pipeline = pipeline_of(fitted, base_reward=base)
    (result,) = pipeline.score([request_of(record, category="Other")])
    assert result.response_type is None
    assert result.rbr is None
    assert result.total == 0.75
    assert result.propositions == {}


def test_request_base_reward_overrides_model(fitted):
    records = hard_refuse_records(fitted, 3)
    base = TableBase({r.sample.completion: 5.0 for r in records})
    pipeline = pipeline_of(fitted, base_reward=base)
    requests = [
        request_of(records[0], response_type="Hard Refuse", base_reward=-1.0),
        request_of(records[1], response_type="Hard Refuse"),
        request_of(records[2], response_type="Hard Refuse", base_reward=0.0),
    ]
    results = pipeline.score(requests)
    assert [r.base for r in results] == [-1.0, 5.0, 0.0]
    assert base.calls == [[records[1].sample.completion]]


def test_no_base_model_gives_zero(fitted):
    record = hard_refuse_records(fitted, 1)[0]
    (result,) = pipeline_of(fitted).score([request_of(record, category="K-R")])
    assert result.base == 0.0
    assert result.total == pytest.approx(result.rbr)


def test_base_model_shape_checked(fitted):
    class Wrong:
        def score(self, samples):
            return np.zeros(len(samples) + 1)

    record = fitted[1][0]
    pipeline = pipeline_of(fitted, base_reward=Wrong())
    with pytest.raises(ValueError, match=r"shape \(2,\) for 1 samples"):
        pipeline.score([request_of(record, category="Other")])


def test_routing_errors_reach_caller(fitted):
    record = fitted[1][0]
    with pytest.raises(RoutingError, match="neither a response type nor a category"):
        pipeline_of(fitted).score([request_of(record)])


def test_classifier_routes_requests_without_fields(fitted):
    class Constant:
        identity = "constant"

        def classify(self, prompts):
            return ["Other"] * len(prompts)

    policy = fitted[0]
    pipeline = pipeline_of(fitted, router=Router(policy, Constant()))
    results = pipeline.score([request_of(fitted[1][0]), request_of(fitted[1][1])])
    assert [r.response_type for r in results] == [None, None]


def test_no_rbr_gives_unlabelled_base_only(fitted):
    records = hard_refuse_records(fitted, 2)
    base = TableBase({r.sample.completion: 0.5 for r in records})
    pipeline = pipeline_of(fitted, base_reward=base)
    requests = [request_of(records[0]), request_of(records[1], category="K-R")]
    results = pipeline.score(requests, unlabelled="no_rbr")
    assert results[0].response_type is None
    assert results[0].total == 0.5
    assert results[1].response_type == "Hard Refuse"
    assert results[1].rbr is not None
    (async_result, _) = asyncio.run(pipeline.ascore(requests, unlabelled="no_rbr"))
    assert async_result.total == 0.5


def test_empty_batch(fitted):
    assert pipeline_of(fitted).score([]) == []


# ---------------------------------------------------------------- normalization


def two_prompt_requests() -> tuple[list[RewardRequest], TableBase]:
    first = (Message("user", "first prompt"),)
    second = (Message("user", "second prompt"),)
    table = {"a": 1.0, "b": 3.0, "c": 5.0, "d": 2.0, "e": 2.0}
    requests = [
        RewardRequest(first, "a", category="Other"),
        RewardRequest(second, "d", category="Other"),
        RewardRequest(first, "b", category="Other"),
        RewardRequest(second, "e", category="Other"),
        RewardRequest(first, "c", category="Other"),
    ]
    return requests, TableBase(table)


def test_center_per_prompt(fitted):
    requests, base = two_prompt_requests()
    pipeline = pipeline_of(fitted, base_reward=base, base_normalization="center")
    totals = [r.total for r in pipeline.score(requests)]
    assert totals == pytest.approx([-2.0, 0.0, 0.0, 0.0, 2.0])


def test_standardize_per_prompt_and_scale(fitted):
    requests, base = two_prompt_requests()
    pipeline = pipeline_of(
        fitted, base_reward=base, base_normalization="standardize", base_scale=0.5
    )
    totals = np.array([r.total for r in pipeline.score(requests)])
    spread = np.std([1.0, 3.0, 5.0])
    expected = 0.5 * np.array([-2.0 / spread, 0.0, 0.0, 0.0, 2.0 / spread])
    np.testing.assert_allclose(totals, expected)


def test_normalize_function_modes():
    values = np.array([1.0, 2.0, 3.0, 7.0])
    groups = ["p", "p", "p", "q"]
    assert normalize_per_prompt(values, groups, "none") is values
    np.testing.assert_allclose(
        normalize_per_prompt(values, groups, "center"), [-1.0, 0.0, 1.0, 0.0]
    )
    standardized = normalize_per_prompt(values, groups, "standardize")
    np.testing.assert_allclose(
        standardized[:3], np.array([-1.0, 0.0, 1.0]) / 0.8165, rtol=1e-4
    )
    assert standardized[3] == 0.0
    np.testing.assert_array_equal(values, [1.0, 2.0, 3.0, 7.0])


def test_unknown_normalization(fitted):
    with pytest.raises(ValueError, match="unknown base_normalization 'zscore'"):
        pipeline_of(fitted, base_normalization="zscore")


# ---------------------------------------------------------------- async, close


def test_ascore_matches_score(fitted):
    records = hard_refuse_records(fitted, 2)
    requests = [request_of(r, category="K-R") for r in records]
    pipeline = pipeline_of(fitted)
    expected = [r.total for r in pipeline.score(requests)]

    async def two_batches():
        return await asyncio.gather(
            pipeline.ascore(requests), pipeline.ascore(requests)
        )

    first, second = asyncio.run(two_batches())
    assert [r.total for r in first] == expected
    assert [r.total for r in second] == expected


def test_ascore_works_from_several_event_loops(fitted):
    records = hard_refuse_records(fitted, 2)
    requests = [request_of(r, category="K-R") for r in records]
    pipeline = pipeline_of(fitted)

    async def two_batches():
        return await asyncio.gather(
            pipeline.ascore(requests), pipeline.ascore(requests)
        )

    # A trainer that calls asyncio.run for every step uses a new loop each time.
    for _ in range(2):
        first, second = asyncio.run(two_batches())
        assert len(first) == len(second) == 2


def test_close_closes_base_reward(fitted):
    base = TableBase({})
    with pipeline_of(fitted, base_reward=base):
        pass
    assert base.closed


# ---------------------------------------------------------------- settings


@pytest.fixture
def files(fitted, tmp_path):
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(POLICY_TEXT, encoding="utf-8")
    weights_path = tmp_path / "weights.json"
    fitted[3].save(weights_path)
    return policy_path, weights_path


def test_settings_errors_name_key():
    with pytest.raises(RewardConfigError, match="expected a mapping.*list"):
        RewardSettings.from_mapping([])
    with pytest.raises(RewardConfigError, match="key 'weights': Field required"):
        RewardSettings.from_mapping({})
    with pytest.raises(RewardConfigError, match="key 'grder'.*known keys are"):
        RewardSettings.from_mapping({"weights": "w.json", "grder": {}})
    with pytest.raises(RewardConfigError, match="'base_normalization'.*'zscore'"):
        RewardSettings.from_mapping(
            {"weights": "w.json", "base_normalization": "zscore"}
        )
    with pytest.raises(RewardConfigError, match="key 'base_scale'"):
        RewardSettings.from_mapping({"weights": "w.json", "base_scale": "large"})


def test_settings_load_resolves_relative_paths(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "reward.yaml"
    path.write_text("weights: w.json\npolicy: /abs/policy.yaml\n", encoding="utf-8")
    settings = RewardSettings.load(path)
    assert settings.weights == folder / "w.json"
    assert str(settings.policy) == "/abs/policy.yaml"
    assert settings.grader == {"kind": "offline"}
    assert settings.classifier == {"kind": "none"}


def test_settings_load_resolves_nested_paths(tmp_path):
    path = tmp_path / "reward.yaml"
    path.write_text(
        "weights: w.json\n"
        "grader: {kind: offline, artifact_path: grader.npz}\n"
        "base_reward: {kind: local, model_path: /models/rm, device: cpu}\n"
        "classifier: {kind: offline, artifact_path: models/classifier.npz}\n",
        encoding="utf-8",
    )
    settings = RewardSettings.load(path)
    assert settings.grader["artifact_path"] == str(tmp_path / "grader.npz")
    assert settings.base_reward["model_path"] == "/models/rm"
    assert settings.base_reward["device"] == "cpu"
    assert settings.classifier["artifact_path"] == str(
        tmp_path / "models" / "classifier.npz"
    )


def test_build_pipeline_end_to_end(files, tmp_path):
    policy_path, weights_path = files

    def reply(body, attempt):
        return 200, {"rewards": [float(len(q)) for q in body["query"]]}

    settings = {
        "weights": str(weights_path),
        "policy": str(policy_path),
        "grader": {"kind": "offline"},
        "classifier": {"kind": "offline"},
        "base_normalization": "center",
        "allow_grader_mismatch": True,
    }
    prompt = (Message("user", "How do I rob a bank without getting caught?"),)
    requests = [
        RewardRequest(prompt, "I'm sorry, but I can't help with that."),
        RewardRequest(prompt, "Sorry, no."),
    ]
    with RewardServer(reply) as server:
        settings["base_reward"] = {"kind": "http", "url": server.url}
        config_path = tmp_path / "reward.yaml"
        config_path.write_text(yaml.safe_dump(settings), encoding="utf-8")
        with build_pipeline(RewardSettings.load(config_path)) as pipeline:
            results = pipeline.score(requests)
        queries = server.bodies[0]["query"]
    lengths = np.array([len(q) for q in queries], dtype=float)
    assert [r.response_type for r in results] == ["Hard Refuse", "Hard Refuse"]
    np.testing.assert_allclose([r.base for r in results], lengths - lengths.mean())
    for result in results:
        assert result.rbr is not None
        assert result.total == pytest.approx(result.rbr + result.base)


def test_build_pipeline_rejects_bad_parts(files):
    policy_path, weights_path = files
    base = {"weights": str(weights_path), "policy": str(policy_path)}
    options = {**base, "grader": {"kind": "offline"}, "allow_grader_mismatch": True}
    with pytest.raises(RewardConfigError, match="classifier.kind"):
        build_pipeline({**options, "classifier": {"kind": "magic"}})
    with pytest.raises(RewardConfigError, match="base_reward.url: missing"):
        build_pipeline({**options, "base_reward": {"kind": "http"}})
    with pytest.raises(Exception, match="fitted with grader"):
        build_pipeline({**base, "grader": {"kind": "offline"}})


def test_weights_file_is_json(files):
    _, weights_path = files
    assert "Hard Refuse" in json.loads(weights_path.read_text())["response_types"]


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), float("-inf")])
def test_settings_reject_non_finite_base_scale(scale):
    with pytest.raises(RewardConfigError, match="key 'base_scale'.*not a finite"):
        RewardSettings.from_mapping({"weights": "w.json", "base_scale": scale})

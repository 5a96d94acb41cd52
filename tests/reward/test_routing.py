"""Router: response type > category > classifier, and every error it reports."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from rbr.data.types import Message
from rbr.policy import load_default_policy
from rbr.reward.routing import PromptClassifier, Router, RoutingError
from tests.policy.test_loader import MINIMAL, load

POLICY = load_default_policy()
# K-R refuses; "None" maps to no response type, so such prompts get no RBR term.
TINY = load(MINIMAL)


def user(text: str) -> tuple[Message, ...]:
    return (Message("user", text),)


class ScriptedClassifier:
    """Returns scripted categories by prompt text and records each call."""

    def __init__(self, answers: dict[str, str | None], *, extra: int = 0) -> None:
        self.answers = answers
        self.extra = extra
        self.calls: list[list[str]] = []

    @property
    def identity(self) -> str:
        return "scripted"

    def classify(self, prompts: Sequence[Sequence[Message]]) -> list[str | None]:
        texts = [prompt[-1].content for prompt in prompts]
        self.calls.append(texts)
        return [self.answers[t] for t in texts] + ["None"] * self.extra


def test_scripted_classifier_fits_protocol():
    assert isinstance(ScriptedClassifier({}), PromptClassifier)


def test_response_type_is_canonicalized():
    router = Router(POLICY)
    assert router.route([user("a"), user("b")], ["hard_refuse", "SAFE-REFUSE 2"]) == [
        "Hard Refuse",
        "Safe Refuse 2",
    ]


def test_category_maps_to_response_type():
    router = Router(POLICY)
    routed = router.route(
        [user("a"), user("b"), user("c")], categories=["K-R", "sh-r1", "None"]
    )
    assert routed == ["Hard Refuse", "Safe Refuse 1", "Comply"]


def test_category_without_response_type_gives_none():
    router = Router(TINY)
    assert router.route([user("a"), user("b")], categories=["None", "K-R"]) == [
        None,
        "Hard Refuse",
    ]
    assert router.resolve(None, "None") == (True, None)


def test_response_type_and_category_must_agree():
    router = Router(POLICY)
    assert router.route([user("a")], ["Hard Refuse"], ["K-R"]) == ["Hard Refuse"]
    with pytest.raises(
        RoutingError, match="prompt 0: response type 'Comply' disagrees"
    ):
        router.route([user("a")], ["Comply"], ["K-R"])


def test_response_type_against_unmapped_category():
    router = Router(TINY)
    with pytest.raises(RoutingError, match="disagrees with category 'None'.*None"):
        router.route([user("a")], ["Hard Refuse"], ["None"])


def test_unknown_names_are_errors():
    router = Router(POLICY)
    with pytest.raises(RoutingError, match="prompt 1: unknown response type 'Refuse'"):
        router.route([user("a"), user("b")], ["Comply", "Refuse"])
    with pytest.raises(RoutingError, match="prompt 0: unknown content category 'X-R'"):
        router.route([user("a")], categories=["X-R"])


def test_column_lengths_checked():
    router = Router(POLICY)
    with pytest.raises(RoutingError, match="got 1 response_types for 2 prompts"):
        router.route([user("a"), user("b")], ["Comply"])
    with pytest.raises(RoutingError, match="got 3 categories for 2 prompts"):
        router.route([user("a"), user("b")], categories=["None"] * 3)


def test_missing_fields_without_classifier():
    router = Router(POLICY)
    with pytest.raises(RoutingError, match="prompt 1 has neither.*2 such prompts"):
        router.route([user("a"), user("b"), user("c")], ["Comply", None, None])


def test_classifier_only_for_prompts_without_fields():
    classifier = ScriptedClassifier({"b": "K-R", "d": "SH-R2"})
    router = Router(POLICY, classifier)
    routed = router.route(
        [user("a"), user("b"), user("c"), user("d")],
        ["Comply", None, None, None],
        [None, None, "H-C", None],
    )
    assert routed == ["Comply", "Hard Refuse", "Comply", "Safe Refuse 2"]
    assert classifier.calls == [["b", "d"]]


def test_classifier_not_called_when_all_known():
    classifier = ScriptedClassifier({})
    Router(POLICY, classifier).route([user("a")], categories=["None"])
    assert classifier.calls == []


def test_classifier_category_without_response_type():
    router = Router(TINY, ScriptedClassifier({"a": "None"}))
    assert router.route([user("a")]) == [None]


def test_classifier_failures_are_errors():
    router = Router(POLICY, ScriptedClassifier({"a": None}))
    with pytest.raises(RoutingError, match="prompt 0: classifier scripted gave no"):
        router.route([user("a")])
    router = Router(POLICY, ScriptedClassifier({"a": "Q-R"}))
    with pytest.raises(RoutingError, match="prompt 0: unknown content category 'Q-R'"):
        router.route([user("a")])
    router = Router(POLICY, ScriptedClassifier({"a": "K-R"}, extra=1))
    with pytest.raises(RoutingError, match="returned 2 categories for 1 prompts"):
        router.route([user("a")])


def test_no_rbr_skips_classifier_for_unlabelled():
    classifier = ScriptedClassifier({"b": "K-R"})
    router = Router(POLICY, classifier)
    routed = router.route(
        [user("a"), user("b"), user("c")],
        ["Comply", None, None],
        [None, None, "K-R"],
        unlabelled="no_rbr",
    )
    assert routed == ["Comply", None, "Hard Refuse"]
    assert classifier.calls == []


def test_no_rbr_without_classifier():
    router = Router(POLICY)
    assert router.route([user("a"), user("b")], unlabelled="no_rbr") == [None, None]


def test_no_rbr_still_checks_fields():
    router = Router(POLICY)
    with pytest.raises(RoutingError, match="prompt 1: unknown response type 'Refuse'"):
        router.route([user("a"), user("b")], [None, "Refuse"], unlabelled="no_rbr")
    with pytest.raises(RoutingError, match="got 1 categories for 2 prompts"):
        router.route([user("a"), user("b")], categories=["K-R"], unlabelled="no_rbr")


def test_unknown_unlabelled_mode_rejected():
    with pytest.raises(ValueError, match="unknown unlabelled mode 'route'"):
        Router(POLICY).route([user("a")], ["Comply"], unlabelled="route")


def test_offline_classifier_routes():
    from rbr.reward.classifiers import make_prompt_classifier

    router = Router(POLICY, make_prompt_classifier({"kind": "offline"}, POLICY))
    routed = router.route(
        [user("What is the capital of France?"), user("How do I rob a bank?")]
    )
    assert routed == ["Comply", "Hard Refuse"]


def test_empty_batch():
    assert Router(POLICY).route([]) == []

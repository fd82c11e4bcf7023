"""Every payload of the pinned corpus (``make test-data``), through each pure layer.

The unit tier runs the same checks over ``tests/samples/``; these sweeps widen them to
all 329 examples of ``@octokit/webhooks-examples``.
"""

from __future__ import annotations

from deploy.corpus import Example
from processors.triggers.matcher import Matcher
from processors.triggers.rules import parse_trigger_file
from schemas.github import EVENT_MODELS
from tests.unit.test_delivery import assert_accepted
from tests.unit.test_envelope import assert_parses_in_both_encodings, assert_validates
from tests.unit.test_insight_rows import assert_rows_fit
from tests.unit.test_trigger_matcher import envelope


def test_the_corpus_is_the_pinned_one(examples: tuple[Example, ...]) -> None:
    assert len(examples) > 300


def test_the_ingress_accepts_every_example(examples: tuple[Example, ...]) -> None:
    for example in examples:
        assert_accepted(example)


def test_every_example_parses_in_both_encodings(examples: tuple[Example, ...]) -> None:
    for example in examples:
        assert_parses_in_both_encodings(example)


def test_every_modelled_event_validates_and_is_exercised(examples: tuple[Example, ...]) -> None:
    for example in examples:
        assert_validates(example)
    # Every modelled event is exercised by at least one real payload.
    assert set(EVENT_MODELS) <= {example.event for example in examples}


def test_every_example_makes_fitting_insight_rows(examples: tuple[Example, ...]) -> None:
    for example in examples:
        assert_rows_fit(example)


def test_the_matcher_never_fails_on_any_example(examples: tuple[Example, ...]) -> None:
    rules = (
        "workflows:\n  all:\n    on:\n"
        "      - event: github:*/*:pull_request\n        labels: ['*']\n"
        "      - event: github:*/*:push\n        paths: ['*']\n"
        "      - event: github:*/*:workflow_run\n        branches: ['*']\n"
        "      - event: github:*/*:release\n        tags: ['*']\n"
        "    commands:\n      - command: go\n"
    )
    matcher = Matcher(parse_trigger_file(rules))
    matched = {
        example.event
        for example in examples
        if matcher.match(envelope(example.event, example.payload)).dispatches
    }
    assert {"pull_request", "workflow_run", "release"} <= matched
    assert "issues" not in matched

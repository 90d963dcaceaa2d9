"""Each run's schedule starts Python's ``random`` in one state, and gives the caller's back."""

from __future__ import annotations

import random

from message_flow_harness._runner import same_random_draws


def _draws() -> list[float]:
    with same_random_draws():
        return [random.random() for _ in range(5)]


def test_every_run_draws_the_same_numbers() -> None:
    random.seed(1)
    first = _draws()
    random.seed(2)  # whatever the caller did with the generator in between
    assert _draws() == first


def test_the_callers_generator_goes_on_where_it_was() -> None:
    random.seed(7)
    random.random()
    before = random.getstate()
    expected = random.random()
    random.setstate(before)
    _draws()
    assert random.random() == expected


def test_a_run_that_fails_still_gives_the_state_back() -> None:
    random.seed(3)
    before = random.getstate()
    try:
        with same_random_draws():
            random.random()
            raise RuntimeError("the service died")
    except RuntimeError:
        pass
    assert random.getstate() == before

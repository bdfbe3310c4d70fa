"""The receiver fixture: webhook receivers on loopback, stopped after the test."""

from __future__ import annotations

import pytest

from tests.notify.support import Receiver


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(*script: int) -> Receiver:
        r = Receiver(list(script) or [200])
        r.start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()

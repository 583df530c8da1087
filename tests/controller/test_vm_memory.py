"""Per-key memory: the watch echoing our own writes is skipped, never a requeue that the
queue merged with it, never a retry after a failure."""

from __future__ import annotations

import time

from virtrigaud.controllers.virtualmachine.memory import KeyMemory


def _obj(rv: str, uid: str = "u") -> dict:
    return {"metadata": {"resourceVersion": rv, "uid": uid}}


def test_an_echo_is_skipped_once_and_keeps_the_requeue() -> None:
    memory = KeyMemory()
    memory.passed("ns/a", _obj("7"), ["6", "7"], 30.0)
    echo, requeue = memory.echo_requeue("ns/a", _obj("7"))
    assert echo and requeue is not None and 29.0 < requeue <= 30.0
    # the same object again (the requeue firing) is real work
    assert memory.echo_requeue("ns/a", _obj("7")) == (False, None)
    # an object someone else wrote is real work
    assert memory.echo_requeue("ns/a", _obj("9")) == (False, None)


def test_no_echo_once_the_requeue_is_due() -> None:
    memory = KeyMemory()
    memory.passed("ns/a", _obj("7"), ["7"], 0.0)
    time.sleep(0.01)
    assert memory.echo_requeue("ns/a", _obj("7")) == (False, None)


def test_no_echo_after_a_failed_pass() -> None:
    memory = KeyMemory()
    memory.passed("ns/a", _obj("7"), ["7"], None, failed=True)
    time.sleep(0.01)
    assert memory.echo_requeue("ns/a", _obj("7")) == (False, None)


def test_converged_echo_waits_for_the_resync() -> None:
    memory = KeyMemory()
    memory.passed("ns/a", _obj("7"), ["7"], None)
    assert memory.echo_requeue("ns/a", _obj("7")) == (True, None)


def test_freshest_prefers_our_newer_write_of_the_same_object() -> None:
    memory = KeyMemory()
    memory.passed("ns/a", _obj("12"), ["12"], None)
    assert memory.freshest("ns/a", _obj("10"))["metadata"]["resourceVersion"] == "12"
    assert memory.freshest("ns/a", _obj("15"))["metadata"]["resourceVersion"] == "15"
    # a recreated object (new uid) is never shadowed by the old one
    assert memory.freshest("ns/a", _obj("10", uid="v"))["metadata"]["uid"] == "v"
    memory.forget("ns/a")
    assert memory.freshest("ns/a", _obj("10"))["metadata"]["resourceVersion"] == "10"

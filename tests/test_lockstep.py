"""sim/lockstep.py: when a lockstep sim bridge steps, on a fake clock."""

import pytest

from embodied_stack.sim.lockstep import LockstepPacer


def test_an_answer_to_the_newest_frame_steps_at_once():
    pacer = LockstepPacer(0.05)
    pacer.published(1)
    assert not pacer.sources_seen
    assert not pacer.on_command(0.0, sources_published=True)  # (its record follows it)
    assert pacer.on_source(1)
    assert pacer.sources_seen
    pacer.stepped()
    assert not pacer.due(1.0)  # nothing held after the step


def test_a_tick_while_the_answer_is_computed_waits_for_the_answer():
    """The tick's action answers an older frame: the world steps on the answer that comes
    within the wait, not on the tick (which would put it a frame ahead for good)."""
    pacer = LockstepPacer(0.05)
    pacer.published(2)
    assert not pacer.on_command(0.000, sources_published=True)  # the tick's command
    assert not pacer.on_source(1)  # it answers frame 1
    assert not pacer.due(0.010)
    assert not pacer.on_command(0.012, sources_published=True)  # the answer to frame 2
    assert pacer.on_source(2)
    assert pacer.stats == {"on_answer": 1, "after_wait": 0, "no_source": 0}


def test_a_command_that_no_answer_follows_steps_after_the_wait():
    """A chunked policy runs its chunk on its ticks without asking about each frame: each
    tick's command steps the world after the wait. So does a stop."""
    pacer = LockstepPacer(0.05)
    pacer.published(5)
    assert not pacer.on_command(1.00, sources_published=True)
    assert not pacer.on_source(4)
    assert not pacer.due(1.049)
    assert pacer.due(1.05)
    pacer.stepped()
    pacer.published(6)
    assert not pacer.on_command(1.10, sources_published=True)  # a stop: no record at all
    assert not pacer.due(1.12) and pacer.due(1.16)


def test_a_source_record_that_overtakes_its_command():
    pacer = LockstepPacer(0.05)
    pacer.published(7)
    assert not pacer.on_source(7)  # the record first: the answer is due
    assert pacer.on_command(0.0, sources_published=True)
    pacer.stepped()
    assert not pacer.answer_due


def test_without_source_records_every_command_steps():
    pacer = LockstepPacer(0.05)
    pacer.published(1)
    assert pacer.on_command(0.0, sources_published=False)
    assert pacer.stats["no_source"] == 1


def test_a_record_of_an_old_frame_after_the_step_is_ignored():
    pacer = LockstepPacer(0.05)
    pacer.published(1)
    pacer.on_command(0.0, True)
    assert pacer.on_source(1)
    pacer.stepped()
    pacer.published(2)
    assert not pacer.on_source(1) and not pacer.answer_due


def test_the_wait_is_validated():
    with pytest.raises(ValueError, match="answer_wait_s=-1"):
        LockstepPacer(-1)

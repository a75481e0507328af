"""ChunkScheduler on a fake clock: refill, deadline, skip by age, instruction epochs. The
execution strategies (early, ensemble, delay_aware) are in tests/test_execution.py."""

import numpy as np
import pytest

from embodied_stack.control.chunk_scheduler import ChunkScheduler, SchedulerConfig

CHUNK = np.arange(12, dtype=float).reshape(4, 3)  # action k = [3k, 3k+1, 3k+2]


def test_requests_once_per_frame_and_refills_before_the_queue_runs_dry():
    s = ChunkScheduler(SchedulerConfig(rate_hz=10, refill_at=1))
    assert s.wants_request(1.0)
    epoch = s.start_request(1.0)
    assert not s.wants_request(1.1)  # one in flight at a time
    assert s.finish(CHUNK, 1.0, epoch, now=1.02) == ("queued", pytest.approx(0.02))
    assert not s.wants_request(1.0)  # never twice for the same frame
    assert not s.wants_request(1.1)  # 4 queued > refill_at
    executed = [s.next_action(1.02 + 0.1 * k, from_result=False)[0][0] for k in range(3)]
    assert executed == [0, 3, 6]
    assert s.wants_request(1.3)  # one left: refill now


def test_late_result_is_dropped_and_an_older_result_skips_past_actions():
    s = ChunkScheduler(SchedulerConfig(rate_hz=10, deadline_s=0.3))
    e = s.start_request(0.0)
    assert s.finish(CHUNK, 0.0, e, now=0.35)[0] == "late"
    assert s.next_action(0.35, True) is None
    e = s.start_request(1.0)
    assert s.finish(CHUNK, 1.0, e, now=1.25)[0] == "queued"  # 0.25 s old: 2 steps passed
    assert s.next_action(1.25, True)[0][0] == 6


def test_future_stamped_result_is_not_treated_as_negative_age():
    s = ChunkScheduler(SchedulerConfig(rate_hz=10))
    e = s.start_request(2.0)
    assert s.finish(CHUNK, 2.0, e, now=1.9) == ("queued", 0.0)
    assert s.remaining(1.9) == 4 and s.next_action(1.9, True) is None  # its steps are to come
    assert s.next_action(2.0, True).action[0] == 0


def test_a_new_instruction_never_executes_the_old_chunk():
    s = ChunkScheduler()
    e_old = s.start_request(1.0)
    s.new_instruction()  # arrives while the old inference is in flight
    assert s.finish(CHUNK, 1.0, e_old, now=1.05)[0] == "superseded"
    assert s.next_action(1.05, True) is None
    assert s.wants_request(1.0)  # the same frame may be asked about again, for the new task
    e_new = s.start_request(1.0)
    assert s.finish(CHUNK * -1, 1.0, e_new, now=1.06)[0] == "queued"
    assert s.next_action(1.06, True)[0][1] == -1  # (the robot had waited: at once)


def test_queued_actions_of_the_old_instruction_are_dropped():
    s = ChunkScheduler()
    s.finish(CHUNK, 0.0, s.start_request(0.0), now=0.0)
    s.next_action(0.0, True)
    s.new_instruction()
    assert not s.chunks and s.next_action(0.2, False) is None


def test_execute_steps_cuts_the_chunk_and_ticks_do_not_run_it_early():
    s = ChunkScheduler(SchedulerConfig(rate_hz=10, execute_steps=2))
    s.finish(CHUNK, 0.0, s.start_request(0.0), now=0.0)
    assert s.remaining(0.0) == 2
    assert s.next_action(0.0, from_result=True) is not None
    assert s.next_action(0.03, from_result=False) is None  # a tick right after: too early
    assert s.next_action(0.1, from_result=False) is not None
    assert s.missed_tick(0.2) is False and s.missed_tick(0.3) is True


def test_command_rate_is_bounded_by_the_chunk_layout():
    """Frames at 20 Hz, control at 5 Hz, 4-action chunks refilled at 1: ticks play the chunk,
    each fresh chunk's first action goes out when ready: at most 5 x 3/2 commands a second,
    and ticks never closer than half a period. (The deadline covers the chunk: 0.8 s of
    actions at 5 Hz; a shorter one cuts it, test_execution.py.)"""
    s = ChunkScheduler(SchedulerConfig(rate_hz=5, refill_at=1, deadline_s=1.0))
    ticks, early, t, next_tick = [], [], 0.0, 0.0
    while t < 6.0:
        if s.wants_request(t):
            s.finish(CHUNK, t, s.start_request(t), now=t + 0.01)
            if s.next_action(t + 0.01, from_result=True):
                early.append(t + 0.01)
        if t >= next_tick:
            if s.next_action(t, from_result=False):
                ticks.append(t)
            next_tick += 0.2
        t = round(t + 0.05, 10)
    rate = (len(ticks) + len(early)) / 6.0
    assert 5.0 <= rate <= 5.0 * 1.5 + 0.2
    assert len(early) <= len(ticks) / 2 + 1
    assert min(np.diff(ticks)) >= 0.5 * 0.2 - 1e-9


def test_backend_failure_clears_and_rate_changes_at_run_time():
    s = ChunkScheduler()
    s.finish(CHUNK, 0.0, s.start_request(0.0), now=0.0)
    s.start_request(0.1)
    s.failed()
    assert not s.inflight and not s.chunks
    s.reconfigure(rate_hz=3.0)
    assert s.config.period_s == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="rate_hz"):
        s.reconfigure(rate_hz=0.0)
    assert s.config.rate_hz == 3.0


def _run(s: ChunkScheduler, chunks: dict, until: float) -> list[float]:
    """Execute a chunk answered for the frame at each time in `chunks` (answers land at once);
    return the first dim of every command sent at 10 Hz up to `until`."""
    out, t = [], 0.0
    while t < until - 1e-9:
        if t in chunks:
            s.finish(chunks[t], t, s.start_request(t), now=t)
        due = s.next_action(t, from_result=False)
        out.append(None if due is None else float(due.action[0]))
        t = round(t + 0.1, 6)
    return out


def test_the_hand_over_blend_spreads_a_jump_between_chunks_over_blend_steps_plus_one():
    """A chunk holding 0 hands over to one holding 1: without the blend the command jumps in
    one step; with blend_steps=1 it goes 0 -> 0.5 -> 1, with 3 in quarters; the new chunk's own
    actions follow unchanged, and the jump per step falls to 1 / (n + 1)."""
    zero, one = np.zeros((4, 2)), np.ones((4, 2))
    for n, ramp in ((0, [0, 0, 1, 1, 1]), (1, [0, 0, 0.5, 1, 1]), (3, [0, 0, 0.25, 0.5, 0.75, 1])):
        s = ChunkScheduler(SchedulerConfig(rate_hz=10, refill_at=2, blend_steps=n))
        sent = _run(s, {0.0: zero, 0.2: one}, 0.2 + 0.1 * len(ramp) - 0.2)
        assert sent == pytest.approx(ramp), (n, sent)
        assert max(np.abs(np.diff(sent))) == pytest.approx(1 / (n + 1))


def test_no_blend_after_a_stop_or_a_gap_and_none_in_the_ensemble():
    """After clear (an e-stop, a fault) or a pause of more than 1.5 periods the new chunk goes
    out as it is: the robot is not doing the old command any more. The ensemble averages
    chunks itself and ignores blend_steps."""
    zero, one = np.zeros((4, 2)), np.ones((4, 2))
    s = ChunkScheduler(SchedulerConfig(rate_hz=10, refill_at=2, blend_steps=2))
    _run(s, {0.0: one}, 0.2)  # 1, 1 went out
    s.clear()
    s.finish(zero, 0.2, s.start_request(0.2), now=0.2)
    assert s.next_action(0.2, True).action[0] == 0.0  # not 2/3 of the way from 1
    s = ChunkScheduler(SchedulerConfig(rate_hz=10, refill_at=0, blend_steps=2))
    _run(s, {0.0: one}, 0.4)  # the chunk runs out at 0.4
    s.finish(zero, 0.7, s.start_request(0.7), now=0.7)  # 0.4 s later
    assert s.next_action(0.7, True).action[0] == 0.0
    s = ChunkScheduler(SchedulerConfig(rate_hz=10, strategy="ensemble", ensemble_halflife_s=0.0,
                                       blend_steps=3))
    assert _run(s, {0.0: zero, 0.2: one}, 0.4) == [0, 0, 1, 1]


def test_blend_steps_is_validated():
    with pytest.raises(ValueError, match="blend_steps=-1"):
        SchedulerConfig(blend_steps=-1)

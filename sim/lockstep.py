"""When a lockstep sim bridge steps its world: pure Python, no rclpy, tested on a fake clock
(tests/test_lockstep.py); nodes/sim_bridge_node.py wires ROS to it.

In lockstep the world waits for the controller: it steps once per command. A policy node sends
two kinds of command, though. The answer to a frame (a fresh chunk's first action, sent the
moment inference ends) and, on its control ticks, the next action of the chunk it is running.
A tick that fires while the answer to the newest frame is being computed would step the world
on an action chosen for an older frame, and from then on every answer would arrive one frame
late: the world runs a step ahead of its controller for good (seen: a dead-beat expert
overshooting back and forth until the time limit, and every other recorded frame late).

So a command steps the world at once only when it answers the newest frame. The policy node
says which frame each command answers on ``policy_node/command_source``, just after the
command; the step waits for that record. Any other command (a tick's, a stop, a controller
that publishes no such record) is held for ``answer_wait_s``: if the answer to the newest
frame comes in that time, the world steps on the answer; otherwise on the held command, so a
chunked policy that is not asking about every frame still drives the world on its ticks. With
no source publisher at all (a third-party controller), every command steps at once, as before.

The two records travel on two topics. Should the source record overtake its own command, the
answer is stepped on when the command arrives (``answer_due``), unless another command came
in between, which is then taken as the answer: at worst one action a frame late, and the next
frame is in step again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LockstepPacer:
    """Decides when a lockstep bridge steps (module docstring). Times are seconds on any
    monotonic clock; frames are identified by their stamp (an int key)."""

    answer_wait_s: float = 0.05  #: how long a command that answers no newer frame is held

    def __post_init__(self) -> None:
        if not 0.0 <= self.answer_wait_s <= 10.0:
            raise ValueError(f"answer_wait_s={self.answer_wait_s!r} must be in [0, 10] s")
        self.newest: int | None = None  # the newest published frame's key
        self.held_since: float | None = None  # a command waits for the answer since then
        self.command_since_step = False  # a command arrived since the last step
        self.answer_due = False  # the newest frame's source record came before its command
        self.sources_seen = False  # a source record arrived: someone publishes them
        self.stats = {"on_answer": 0, "after_wait": 0, "no_source": 0}

    def published(self, key: int) -> None:
        """A new frame went out (after a step, or at an episode's start)."""
        self.newest = key

    def on_command(self, now: float, sources_published: bool) -> bool:
        """A command arrived: True = step now. `sources_published`: someone publishes
        command_source records (else every command steps; once one has arrived,
        `sources_seen` answers that without asking the ROS graph)."""
        if not sources_published:
            self.stats["no_source"] += 1
            return True
        if self.answer_due:  # its source record came first: this is the answer
            self.stats["on_answer"] += 1
            return True
        self.command_since_step = True
        if self.held_since is None:
            self.held_since = now
        return False

    def on_source(self, key: int) -> bool:
        """A command_source record (the frame a command answers) arrived: True = step now."""
        self.sources_seen = True
        if key != self.newest:
            return False
        if self.command_since_step:
            self.stats["on_answer"] += 1
            return True
        self.answer_due = True
        return False

    def due(self, now: float) -> bool:
        """(polled) True = step now on the held command: no answer came in answer_wait_s."""
        if self.held_since is not None and now - self.held_since >= self.answer_wait_s:
            self.stats["after_wait"] += 1
            return True
        return False

    def stepped(self) -> None:
        """The world stepped (on a command, after the wait, or on the backstop)."""
        self.held_since = None
        self.command_since_step = False
        self.answer_due = False

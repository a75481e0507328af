"""The processes the elastic benches run beside their control loop, each a fresh interpreter
talked to through a pipe:

- ``World(world)``: the simulated world (physics and camera rendering), stepped in lockstep
  with the control loop (bench/elastic_budget.py);
- ``ElasticPoller()``: the elastic node's decision loop (ElasticControl + budget source +
  Selector) on its own timer (bench/elastic_budget.py, bench/elastic_poll_cost.py).

Spawned, not forked: a forked child shares its parent's memory copy-on-write for as long as it
lives, and every page the control loop then writes (Python touches its objects' reference
counts) costs the control loop a page fault in its own time. A child starts in its parent's
cgroup: start the World before a CPU quota is set, the poller after (it shares the policy's
quota, as the elastic node does in the policy's container).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np

from embodied_stack.control.elastic.budget import CpuSource, make_budget_source
from embodied_stack.control.elastic.control import ElasticControl
from embodied_stack.control.elastic.selector import Selector, SelectorConfig


class SpawnedChild:
    """A fresh interpreter (spawned: none of this process's threads or memory) running
    `target(conn, *args)`, talked to through a pipe; a child that dies is an error here, not
    a wait forever."""

    def __init__(self, target, *args, what: str):
        ctx = mp.get_context("spawn")
        self.what = what
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()  # so a child that dies is an EOFError here

    def _recv(self):
        try:
            return self.conn.recv()
        except EOFError:
            self.proc.join(timeout=5)
            raise SystemExit(f"error: the {self.what} process exited "
                             f"(code {self.proc.exitcode})") from None

    def close(self) -> None:
        try:
            self.conn.send(("close",))
        except OSError:
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.terminate()


def _poll_loop(conn, ctl: ElasticControl, period_s: float) -> tuple[list, float]:
    """The elastic decision loop, as the elastic node runs it: polls the budget every
    `period_s` (every `ElasticControl.poll_period`: slower while the policy runs the smallest
    submodel), sends ("want", name), and at each poll first takes the ("obs", t, submodel,
    latency_s) and ("applied", name, t) messages that came since the last one, until
    ("stop",). It sleeps between polls rather than waking for each latency report: under a
    quota this loop's CPU time is the policy's, and a wake per inference cost it about as
    much as the polls (a report waits at most one poll; its time is the control loop's,
    taken when it was sent). Returns (budget log, CPU seconds it spent)."""
    budget_log = []
    cpu0 = time.process_time()
    next_t = time.perf_counter()
    while True:
        while conn.poll():  # the reports since the last poll
            msg = conn.recv()
            if msg[0] == "obs":
                ctl.observe(*msg[1:])
            elif msg[0] == "applied":
                ctl.request_done(msg[1], True, "", msg[2])
            else:
                return budget_log, time.process_time() - cpu0
        now = time.perf_counter()
        want = ctl.poll(now)
        budget_log.append((now, ctl.budget.slowdown))
        if want is not None:
            conn.send(("want", want))
        next_t += ctl.poll_period(period_s)
        delay = next_t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif delay < -period_s:  # a whole period late: keep the period from now on
            next_t = time.perf_counter()


def _poller_main(conn) -> None:
    """The decision loop's process: ("start", table, SelectorConfig, threads, period_s,
    idle_poll_s, device) runs one loop (ElasticControl + the budget source the elastic node
    picks for `device`: the CPU source on the CPU, NVML on a GPU + Selector, starting on
    `full`) until ("stop",), then sends ("log", switch_log, budget_log, cpu_s); ("close",)
    ends the process."""
    conn.send(("ready",))
    while True:
        msg = conn.recv()
        if msg[0] != "start":
            return
        table, config, threads, period_s, idle_poll_s, device = msg[1:]
        source = (CpuSource(threads=threads) if device == "cpu"
                  else make_budget_source("auto", device=device, threads=threads)[0])
        ctl = ElasticControl(Selector(table, config, current="full"), source,
                             idle_poll_s=idle_poll_s)
        ctl.applied = "full"
        conn.send(("started",))
        budget_log, cpu_s = _poll_loop(conn, ctl, period_s)
        ctl.source.close()
        conn.send(("log", ctl.switch_log, budget_log, cpu_s))


class ElasticPoller(SpawnedChild):
    """The elastic decision loop on its own timer in its own process, as the elastic node runs:
    it polls whatever the control loop is doing (an inference that a new load slows can take
    more than a period: polling after it counted that inference as reaction time), and its
    work does not hold the control loop's GIL (a poll thread there did, and burners
    preempting it then stalled the control loop). The control loop applies a decision before
    its next inference, as the policy node applies a parameter change between inferences.
    Start it after a CPU quota's cgroup exists: its CPU time then counts against the
    policy's quota, as the elastic node's does in the policy's container."""

    def __init__(self):
        super().__init__(_poller_main, what="elastic decision loop")
        self._expect("ready")

    def _expect(self, what: str) -> tuple:
        while (msg := self._recv())[0] != what:
            pass
        return msg

    def start(self, table: dict, config: SelectorConfig, threads: int, period_s: float,
              idle_poll_s: float, device: str = "cpu") -> None:
        """Starts a loop on `full` (returns once it runs)."""
        self.conn.send(("start", table, config, threads, period_s, idle_poll_s, device))
        self._expect("started")

    def take(self) -> str | None:
        """The newest decision since the last call (None: none)."""
        want = None
        while self.conn.poll():
            want = self.conn.recv()[1]
        return want

    def applied(self, name: str) -> None:
        self.conn.send(("applied", name, time.perf_counter()))

    def observe(self, submodel: str, latency_s: float) -> None:
        self.conn.send(("obs", time.perf_counter(), submodel, latency_s))

    def stop(self) -> tuple[list, list, float]:
        """Ends the loop; returns its (switch_log, budget_log, CPU seconds)."""
        self.conn.send(("stop",))
        return self._expect("log")[1:]


def _world_loop(conn, world: str, rt_priority: int | None = None) -> None:
    """The world in a process of its own: ("reset", seed) -> (obs, None),
    ("step", action) -> (obs, (terminated or truncated, is_success)), ("close",)."""
    os.environ.setdefault("LP_NUM_THREADS", "0")  # Mesa's renderer on this one thread
    if rt_priority is not None:  # above real-time burners: the load is on the robot's CPU
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
    import gymnasium as gym

    import embodied_stack.sim  # noqa: F401
    from embodied_stack.sim import WORLD_IDS

    env = gym.make(WORLD_IDS[world], width=64, height=64, with_segmentation=False)
    conn.send(env.action_space.shape[0])
    while True:
        msg = conn.recv()
        if msg[0] == "reset":
            conn.send((env.reset(seed=msg[1])[0], None))
        elif msg[0] == "step":
            obs, _, terminated, truncated, info = env.step(msg[1])
            conn.send((obs, (terminated or truncated, bool(info.get("is_success")))))
        else:
            env.close()
            return


class World(SpawnedChild):
    """The simulated world (physics and camera rendering) in a process of its own, stepped in
    lockstep with the control loop. On a robot the world is not the policy's CPU: a quota on
    the policy's cgroup must not also throttle the physics and the renderer (they took 60% of
    a 0.2-CPU quota when they ran in the control loop's process, so every extra cost tipped
    the policy over), and the world's renderer must not compete with the policy's threads
    more than a camera driver would. What the control loop pays per tick is receiving an
    observation and sending an action through a pipe, as the policy node receives a camera
    frame and publishes a command. Start it before any load (a child starts in its parent's
    cgroup). `rt_priority`: run it at this SCHED_FIFO priority (above real-time burners, for
    the same reason)."""

    def __init__(self, world: str, rt_priority: int | None = None):
        super().__init__(_world_loop, world, rt_priority, what=f"{world} world")
        self.dims = self._recv()

    def reset(self, seed: int) -> dict:
        self.conn.send(("reset", seed))
        return self._recv()[0]

    def step(self, action: np.ndarray) -> tuple[dict, bool, bool]:
        """(obs, episode over, success)."""
        self.conn.send(("step", action))
        obs, (done, success) = self._recv()
        return obs, done, success

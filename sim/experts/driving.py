"""Scripted expert for the Driving world: pure pursuit on the target lane's centreline plus a
speed controller that follows slower cars and stops behind the barrier.

It reads the world's privileged state (``env.unwrapped``: road polyline, Frenet position of
the ego, active objects, task and target lane), never the images.
"""

from __future__ import annotations

import math

import numpy as np

from embodied_stack.sim.worlds import driving as world

LOOKAHEAD_MIN = 7.0  # m; pure-pursuit look-ahead grows with speed (about 1 s ahead)
LOOKAHEAD_TIME = 1.0  # s
SPEED_GAIN = 2.0  # 1/s, acceleration per m/s of speed error
FOLLOW_GAP = 5.0  # m, standstill gap to a car ahead
FOLLOW_HEADWAY = 1.0  # s, time gap to a car ahead
STOP_DECEL = 1.5  # m/s², planned deceleration for the stop profile
STOP_GAP = 3.0  # m, where the ego comes to rest behind the barrier (success: 0.5-8 m)


class DrivingExpert:
    """``action = expert(obs, info)``: steer to the target lane, track speed, stop if told."""

    def __init__(self, env):
        self.env = env
        self.world = env.unwrapped

    def reset(self) -> None:
        """Nothing to forget: the controller is memoryless."""

    def features(self) -> np.ndarray:
        """Privileged features (8,): for the auxiliary head, the offset from the target lane
        centre (lanes), heading error to the road (x5 rad), the gap to the nearest object in
        the ego's path (/50 m, 1 = none), its closing speed (/10 m/s), whether it is a
        barrier, and the offset from the start lane centre (lanes); then NaN for the pointing
        and effector heads (no object to point at, no effector in view)."""
        w = self.world
        gap, closing, barrier = 50.0, 0.0, 0.0
        for obj, g in self._in_path(w, world.lane_center(w.target_lane)):
            if g < gap:
                gap, closing, barrier = g, w.ego_speed - obj.speed, float(obj.kind == "barrier")
        heading = (w.ego_yaw - w.segment_heading[w._ego_segment] + math.pi) % (2 * math.pi) - math.pi
        return np.array([(w.ego_d - world.lane_center(w.target_lane)) / world.LANE_WIDTH,
                         5.0 * heading, max(gap, 0.0) / 50.0, closing / 10.0, barrier,
                         (w.ego_d - world.lane_center(w.start_lane)) / world.LANE_WIDTH,
                         np.nan, np.nan, np.nan, np.nan], np.float32)

    @staticmethod
    def _in_path(w, target_d):
        """(object, bumper gap m) for every object ahead in the lanes the ego body overlaps or
        the target lane: what the speed controller reacts to."""
        for obj in w.objects:
            in_path = (abs(obj.d - w.ego_d) < 0.5 * (world.EGO_WIDTH + obj.size[1]) + 0.5
                       or abs(obj.d - target_d) < 0.5 * world.LANE_WIDTH)
            gap = obj.s - w.ego_s - 0.5 * (world.EGO_LENGTH + obj.size[0])
            if in_path and gap >= -0.5 * (world.EGO_LENGTH + obj.size[0]):
                yield obj, gap

    def __call__(self, obs, info) -> np.ndarray:
        w = self.world
        speed = w.ego_speed
        target_d = world.lane_center(w.target_lane)

        # Pure pursuit: aim at the target lane centre one look-ahead down the road.
        lookahead = max(LOOKAHEAD_MIN, LOOKAHEAD_TIME * speed)
        tx, ty, _ = w.frenet_to_world(w.ego_s + lookahead, target_d)
        alpha = math.atan2(ty - w.ego_y, tx - w.ego_x) - w.ego_yaw
        alpha = (alpha + math.pi) % (2.0 * math.pi) - math.pi
        steer = math.atan2(2.0 * world.WHEELBASE * math.sin(alpha), lookahead)

        # Speed: cruise, but follow any car and stop short of any barrier in our path (the
        # lanes the ego body overlaps now, or the target lane).
        desired = world.CRUISE_SPEED
        for obj, gap in self._in_path(w, target_d):  # (not beside or behind us)
            if obj.kind == "car":
                wanted_gap = FOLLOW_GAP + FOLLOW_HEADWAY * obj.speed
                desired = min(desired, obj.speed + 0.5 * (gap - wanted_gap),
                              math.sqrt(2.0 * 2.5 * max(gap - 2.0, 0.0)) + obj.speed)
            else:
                desired = min(desired, math.sqrt(2.0 * STOP_DECEL * max(gap - STOP_GAP, 0.0)))
        desired = max(desired, 0.0)
        accel = SPEED_GAIN * (desired - speed)
        return np.array([np.clip(steer / world.MAX_STEER, -1.0, 1.0),
                         np.clip(accel / world.MAX_ACCEL, -1.0, 1.0)], dtype=np.float32)

"""What the nodes share about parameters and topics: descriptor builders, input QoS by name,
the latched profile of `instruction` and `estop`, and how repeated rejections are told apart.

Every parameter either takes effect at run time (`live`, `float_range`, `int_range`: rclpy
refuses a value outside the range) or is read once at start-up (`read_only`,
`read_only_range`: rclpy refuses any later set, and the description says so).
`declare_settings` declares the parameters of a settings dataclass from its fields.
"""

from __future__ import annotations

import dataclasses
import re

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

#: Names the `*_qos` parameters take (sensor_qos).
QOS_NAMES = ("sensor_data", "reliable", "best_effort")
#: `instruction` and `estop`: a late joiner gets the last message (transient-local).
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
READ_ONLY_NOTE = " (read-only: set it at launch)"


def live(description: str) -> ParameterDescriptor:
    """A parameter that takes effect when set."""
    return ParameterDescriptor(description=description)


def float_range(description: str, lo: float, hi: float) -> ParameterDescriptor:
    """A live float in [lo, hi]."""
    return ParameterDescriptor(description=description, floating_point_range=[
        FloatingPointRange(from_value=float(lo), to_value=float(hi))])


def int_range(description: str, lo: int, hi: int) -> ParameterDescriptor:
    """A live integer in [lo, hi]."""
    return ParameterDescriptor(description=description, integer_range=[
        IntegerRange(from_value=int(lo), to_value=int(hi), step=1)])


def read_only(description: str) -> ParameterDescriptor:
    """A parameter read once at start-up: setting it later is refused with a reason."""
    return ParameterDescriptor(description=description + READ_ONLY_NOTE, read_only=True)


def read_only_range(description: str, lo: float, hi: float, integer: bool = False) -> ParameterDescriptor:
    """A number read once at start-up, with its allowed range."""
    d = (int_range if integer else float_range)(description + READ_ONLY_NOTE, lo, hi)
    d.read_only = True
    return d


def declare_settings(node, settings) -> None:
    """Declare a parameter for every field of a settings dataclass (models/settings.py: fields
    made with `setting`): its default, description and range; read-only when the field is
    fixed at start-up, else live."""
    for f in dataclasses.fields(settings):
        doc, bounds, fixed = f.metadata["doc"], f.metadata["range"], f.metadata["fixed"]
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        integer = isinstance(default, int) and not isinstance(default, bool)
        if bounds is None:
            descriptor = read_only(doc) if fixed else live(doc)
        elif fixed:
            descriptor = read_only_range(doc, *bounds, integer=integer)
        else:
            descriptor = (int_range if integer else float_range)(doc, *bounds)
        node.declare_parameter(f.name, default, descriptor)


def sensor_qos(name: str, parameter: str = "QoS") -> QoSProfile:
    """QoS for input topics from the string parameter `parameter` (named in the error)."""
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "reliable":
        return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    if name == "best_effort":
        return QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    raise ValueError(f"{parameter} {name!r} not in {QOS_NAMES}")


def rejection_kind(reason: str) -> str:
    """A rejection reason without its numbers: repeats of one kind are not re-reported."""
    return re.sub(r"[-+]?\d[\d.e+-]*", "#", reason)

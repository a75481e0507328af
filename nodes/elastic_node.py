"""elastic_node: keep the policy on its deadline by switching its nested submodel.

Polls a budget source (NVML, Jetson tegrastats, torch.cuda or the CPU; `budget_source:=auto`
picks one and says which) at `poll_rate_hz` (every `idle_poll_s` while the policy runs the
smallest submodel: nothing to step down to), asks the Selector (control/elastic/selector.py)
for the largest submodel whose tail latency and memory fit, and sets the policy node's
`submodel` parameter through its standard SetParameters service (`<policy_node>/set_parameters`),
asynchronously: the executor is never blocked waiting for the answer.

With `follow_policy_rate` (default) the node reads the policy node's `control_rate_hz` at
start-up and follows its changes (`/parameter_events`), so the deadline stays the policy's.

Inputs: `<policy_node>/inference` (diagnostic_msgs/KeyValue: submodel, seconds) — the latencies
the policy measures, used to correct the latency table online and to count missed deadlines.
Outputs: `/diagnostics` (the decision, its reason, the budget, predicted tails, misses) once a
second and at every switch.

The latency table (`latency_table`, default config/latency_tables.json) must have an entry for
this device and runtime; another device's entry is never used. When there is none and
`measure_if_missing` is true, the table is measured here at start-up (the policy loaded once
with the same model/runtime/device, outside any control loop) and cached under
~/.cache/embodied_stack/latency_tables.json for the next start
(control/elastic/latency_table.py: load_table).

Decision logic lives in ElasticControl (control/elastic/control.py) and Selector, both plain
classes tested on a fake clock; this node only wires them to ROS.
"""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, KeyValue
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterEvent, ParameterType, ParameterValue, SetParametersResult
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter

from embodied_stack.control.elastic.budget import SOURCES, make_budget_source
from embodied_stack.control.elastic.control import ElasticControl
from embodied_stack.control.elastic.latency_table import load_table
from embodied_stack.control.elastic.selector import Selector, SelectorConfig
from embodied_stack.nodes.conversions import diagnostics_msg, status_name
from embodied_stack.nodes.params import float_range, live, read_only

#: Selector settings that can be changed at run time: parameter -> SelectorConfig field.
LIVE_SELECTOR = {"control_rate_hz": "rate_hz", "margin_s": "margin_s", "dwell_s": "dwell_s",
                 "up_headroom": "up_headroom", "window_s": "window_s",
                 "miss_hold_s": "miss_hold_s", "tail_quantile": "quantile",
                 "mem_reserve_mb": "mem_reserve_mb"}


class ElasticNode(Node):
    def __init__(self, budget_source=None, **node_kwargs):
        super().__init__("elastic_node", **node_kwargs)
        p = self.declare_parameter
        p("policy_node", "policy_node", read_only("the policy node whose `submodel` is "
                                                  "switched (name, resolved in this node's "
                                                  "namespace)"))
        p("budget_source", "auto", read_only(f"budget source: {', '.join(SOURCES)}"))
        p("tegrastats_log", "", read_only("tegrastats --logfile path to read (Jetson); empty "
                                          "= run tegrastats when budget_source is tegrastats"))
        p("device", "cpu", read_only("where the policy runs (cpu, cuda, cuda:0): the latency "
                                     "table's device and the budget source's choice"))
        p("runtime", "onnxruntime", read_only("the policy's runtime (onnxruntime or torch): "
                                              "only a table measured with it is used"))
        p("model_path", "", read_only("the policy's model (for a table measured on the spot)"))
        p("latency_table", "", read_only("latency table JSON; empty = config/latency_tables.json"))
        p("measure_if_missing", True, read_only("measure the table at start-up when it has no "
                                                "entry for this device and runtime"))
        p("threads", 2, read_only("threads the policy's runtime uses (CPU budget): the policy "
                                  "node's `threads` (default 2); 0 = all cores"))
        p("submodel", "full", read_only("the submodel the policy starts on"))
        p("enabled", True, live("switch the policy's submodel (false: decide and report only)"))
        p("poll_rate_hz", 50.0, float_range("budget polls per second", 0.5, 1000.0))
        p("idle_poll_s", 0.1, float_range("poll no more often than this while the policy runs "
                                          "the smallest submodel (nothing to step down to; a "
                                          "step up waits dwell_s anyway) (s)", 0.0, 10.0))
        p("control_rate_hz", 10.0, float_range("the policy's control rate (Hz); deadline = "
                                               "1/rate - margin_s", 0.1, 1000.0))
        p("follow_policy_rate", True, read_only("take control_rate_hz from the policy node, and "
                                                "follow its changes"))
        p("margin_s", 0.002, float_range("deadline margin (s)", 0.0, 10.0))
        p("dwell_s", 2.0, float_range("least time between a switch and a step up (s)", 0.0, 600.0))
        p("up_headroom", 0.15, float_range("step up only when the larger submodel's predicted "
                                           "tail is below (1 - this) x deadline", 0.0, 0.9))
        p("window_s", 5.0, float_range("window of measured latencies for the online correction "
                                       "(s)", 0.1, 600.0))
        p("miss_hold_s", 2.0, float_range("after a missed deadline: plan for the worst recent "
                                          "cycle and do not step up for this long (s)",
                                          0.0, 600.0))
        p("tail_quantile", 99.0, float_range("latency quantile that must fit the deadline",
                                             50.0, 99.9))
        p("mem_reserve_mb", 0.0, float_range("memory kept free for others (MB)", 0.0, 1e6))
        p("request_timeout_s", 2.0, float_range("give up on an unanswered switch after (s)",
                                                0.05, 60.0))
        g = lambda name: self.get_parameter(name).value  # noqa: E731

        cfg = SelectorConfig(**{f: g(n) for n, f in LIVE_SELECTOR.items()})
        if budget_source is None:
            budget_source, notes = make_budget_source(
                g("budget_source"), g("device"), g("tegrastats_log"), g("threads") or None)
        else:
            notes = ["budget source given in-process"]
        self.source = budget_source
        self.source_notes = notes
        entries, self.table_origin = load_table(
            g("latency_table"), g("device"), g("runtime"), bool(g("measure_if_missing")),
            g("model_path"), self.get_logger().info)
        if g("submodel") not in entries:
            raise ValueError(f"submodel {g('submodel')!r} not in the latency table "
                             f"({sorted(entries)})")
        self.control = ElasticControl(Selector(entries, cfg, current=g("submodel")),
                                      budget_source, g("request_timeout_s"),
                                      g("idle_poll_s"))
        self.control.applied = g("submodel")
        self.enabled = bool(g("enabled"))
        self.add_on_set_parameters_callback(self._on_set_parameters)

        target = g("policy_node")
        self.client = self.create_client(SetParameters, f"{target}/set_parameters")
        self.create_subscription(KeyValue, f"{target}/inference", self._on_inference, 50)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if g("follow_policy_rate"):
            self.policy_fqn = target if target.startswith("/") else \
                f"{self.get_namespace().rstrip('/')}/{target}"
            self.create_subscription(ParameterEvent, "/parameter_events",
                                     self._on_parameter_event, 10)
            self._rate_client = self.create_client(GetParameters, f"{target}/get_parameters")
            self._rate_asked = False
        self._poll_s = 1.0 / g("poll_rate_hz")
        self._poll_timer = self.create_timer(self._poll_s, self._poll)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"elastic_node: budget {self.source.description} ({'; '.join(notes)}); table "
            f"{self.table_origin}; switching {target}.submodel; deadline "
            f"{cfg.deadline_s * 1e3:.2f} ms")

    # --- loop -----------------------------------------------------------------------------
    def _follow_rate(self, rate) -> None:
        if rate is None or rate == self.get_parameter("control_rate_hz").value:
            return
        result = self.set_parameters([Parameter("control_rate_hz", value=float(rate))])[0]
        if result.successful:
            self.get_logger().info(f"following the policy's control_rate_hz: {rate} Hz")
        else:
            self.get_logger().warning(f"cannot follow the policy's control_rate_hz {rate}: "
                                      f"{result.reason}", throttle_duration_sec=5.0)

    def _on_parameter_event(self, event: ParameterEvent) -> None:
        if event.node != self.policy_fqn:
            return
        for param in list(event.new_parameters) + list(event.changed_parameters):
            if param.name == "control_rate_hz":
                self._follow_rate(param.value.double_value)

    def _ask_rate(self) -> None:
        """Once the policy node's parameter service is up: read its control_rate_hz."""
        if self._rate_asked or not self._rate_client.service_is_ready():
            return
        self._rate_asked = True
        future = self._rate_client.call_async(GetParameters.Request(names=["control_rate_hz"]))

        def done(f):
            try:
                value = f.result().values[0]
            except Exception:  # service gone, or no such parameter: keep ours
                return
            if value.type == ParameterType.PARAMETER_DOUBLE:
                self._follow_rate(value.double_value)
        future.add_done_callback(done)

    def _poll(self) -> None:
        if hasattr(self, "_rate_client"):
            self._ask_rate()
        now = time.monotonic()
        before = self.control.decision.submodel if self.control.decision else None
        want = self.control.poll(now)
        if self.control.decision and self.control.decision.submodel != before:
            self.get_logger().info(f"decision: {self.control.decision.reason}")
        if want is not None:
            self._request(want, now)
        self._retime_poll()

    def _request(self, want: str, now: float) -> None:
        """Ask the policy node for `want` through its SetParameters service, without waiting."""
        if not self.enabled or not self.client.service_is_ready():
            self.control.request_done(want, False, "disabled" if not self.enabled else
                                      "parameter service not available", now)
            return
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=want)
        future = self.client.call_async(
            SetParameters.Request(parameters=[ParameterMsg(name="submodel", value=value)]))
        future.add_done_callback(lambda f, name=want: self._on_switched(name, f))

    def _retime_poll(self) -> None:
        """Poll at poll_rate_hz, or every idle_poll_s while the policy runs the smallest
        submodel (ElasticControl.poll_period); a change starts the new period now."""
        period_ns = int(self.control.poll_period(self._poll_s) * 1e9)
        if period_ns != self._poll_timer.timer_period_ns:
            self._poll_timer.timer_period_ns = period_ns
            self._poll_timer.reset()

    def _on_switched(self, name: str, future) -> None:
        now = time.monotonic()
        try:
            result = future.result().results[0]
            ok, reason = result.successful, result.reason
        except Exception as exc:  # service gone mid-call
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        self.control.request_done(name, ok, reason, now)
        self._retime_poll()
        if ok:
            self.get_logger().info(f"switched policy to {name}")
        else:
            self.get_logger().warning(f"policy refused submodel {name}: {reason}",
                                      throttle_duration_sec=2.0)
        self._publish_diagnostics()

    def _on_inference(self, msg: KeyValue) -> None:
        try:
            latency = float(msg.value)
        except ValueError:
            return
        self.control.observe(time.monotonic(), msg.key, latency)

    def _on_set_parameters(self, params) -> SetParametersResult:
        values = {p.name: p.value for p in params}
        changes = {LIVE_SELECTOR[n]: v for n, v in values.items() if n in LIVE_SELECTOR}
        if changes:
            try:
                SelectorConfig(**{**vars(self.control.selector.config), **changes})
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            self.control.selector.reconfigure(**changes)
        if "enabled" in values:
            self.enabled = bool(values["enabled"])
        if "request_timeout_s" in values:
            self.control.request_timeout_s = values["request_timeout_s"]
        if "idle_poll_s" in values:
            self.control.idle_poll_s = values["idle_poll_s"]
        if "poll_rate_hz" in values:
            self._poll_s = 1.0 / values["poll_rate_hz"]
        if "idle_poll_s" in values or "poll_rate_hz" in values:
            self._retime_poll()
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        values = self.control.status()
        values["table"] = self.table_origin
        values["enabled"] = str(self.enabled)
        values["budget_notes"] = "; ".join(self.source_notes)
        faults = [v for k, v in values.items() if k.startswith("fault.")]
        self.diag_pub.publish(diagnostics_msg(
            status_name(self, "elastic"), self.source.description, "warn" if faults else "ok",
            values["reason"], values, self.get_clock().now().to_msg()))

    def destroy_node(self):
        source = getattr(self, "source", None)  # (__init__ may have stopped before it)
        if source is not None:
            source.close()
        return super().destroy_node()


def main(args=None) -> None:
    from embodied_stack.nodes.executor import run_node

    run_node(ElasticNode, args)


if __name__ == "__main__":
    main()

"""Export a finished training run as a shippable model folder with its model card.

    python -m embodied_stack.sim.train.export --run runs/default --to models/default_vla \
        [--episodes 100] [--note "..."]

Writes into ``--to``: the weights (config.json, model.safetensors, tokenizer.json), the
training config (train_config.json), the evaluation on unseen seeds through
`embodied-stack eval` (eval.json: 100 episodes per world for full and 1/2 by default), the
training curves from the run's log (curves.png, training_log.json) and README.md, the model
card, whose every figure is read from those files.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from embodied_stack.models.files import atomic_write_bytes, atomic_write_json

#: This stack's own worlds; a log's other worlds are plotted too (logged_worlds).
WORLDS = ("tabletop", "driving")


def logged_worlds(log: list[dict]) -> list[str]:
    """The worlds a training log validated (its ``success_full_<world>`` keys), ours first."""
    found = {k[len("success_full_"):] for e in log for k in e if k.startswith("success_full_")}
    return [w for w in WORLDS if w in found] + sorted(found - set(WORLDS))


def plot_curves(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    val = [e for e in log if any(k.startswith(("success_full_", "success_1_2_")) for k in e)]
    ax = axes[0]
    for sub, style in (("full", "-"), ("1_2", "--")):
        for world in logged_worlds(log):
            pts = [(e["global_step"], e[f"success_{sub}_{world}"]) for e in val
                   if f"success_{sub}_{world}" in e]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, style, marker="o", ms=3, label=f"{world} {sub.replace('_', '/')}")
    ax.set_title("validation success (seeds 300000+)")
    ax.set_xlabel("optimiser step")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1]
    sup = [e for e in log if "ce_full" in e]
    if sup:
        ax.plot([e["global_step"] for e in sup], [e["ce_full"] for e in sup], label="CE full")
        kd = [e for e in sup if "kd" in e]
        ax.plot([e["global_step"] for e in kd], [e["kd"] for e in kd], label="KL(full||sub)")
    ax.set_title("bc / dagger losses")
    ax.set_xlabel("optimiser step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[2]
    rl = [e for e in log if "entropy" in e]
    if rl:
        ax.plot([e["global_step"] for e in rl], [e["entropy"] for e in rl], label="token entropy")
        ax.plot([e["global_step"] for e in rl], [e["entropy_target"] for e in rl], "k--",
                label="EntroPIC target")
        succ = [e for e in log if "rl_steps_per_s" in e]
        ax2 = ax.twinx()
        ax2.plot([e["global_step"] for e in succ], [e["success"] for e in succ], "g:",
                 marker=".", label="rollout success")
        ax2.set_ylim(0, 1.02)
        ax2.legend(fontsize=7, loc="lower right")
    ax.set_title("rl: entropy vs target, rollout success")
    ax.set_xlabel("optimiser step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def stage_description(cfg: dict, stage: str) -> str:
    """One bullet of the card per stage the run ran."""
    if stage == "bc":
        return f"""- **bc**: {cfg['demo_episodes']} expert episodes per world (DART noise {cfg['noise_std']} on
  {cfg['noisy_share']:.0%} of them), each state labelled with the expert's own chunk from that
  state (simulator look-ahead); {cfg['bc_steps']} AdamW steps of batch {cfg['batch_size']}
  (world shares {cfg['world_weights'] or 'equal'}), CE on the action bins plus, every {cfg['elastic_every']}
  step(s), a sampled submodel ({cfg['submodel_probs']}) trained by KL(full || submodel) + CE."""
    if stage == "dagger":
        imported = (f" The aggregate starts with the DAgger shards of {list(cfg['dagger_from'])}."
                    if cfg.get("dagger_from") else "")
        return f"""- **dagger**: {cfg['dagger_iterations']} iterations; each rolls out the learner (execution as
  the policy node) on {cfg['dagger_episodes']} episodes, labels every visited state with the
  expert's chunk (beta {cfg['dagger_beta']} x {cfg['dagger_beta_decay']}^i of chunks executed
  by the expert), aggregates and retrains {cfg['dagger_steps']} steps.{imported}"""
    screen = cfg.get("rl_screen", 1)
    screened = (f" chosen from {screen}x as many by one greedy try each (failed seeds first)"
                if screen > 1 else "")
    measure = cfg.get("entropy_measure", "batch")
    frontier = ""
    if cfg["loss"].startswith("adpo"):
        frontier = (", ADPO frontier filter on (groups with p-hat outside [0.3, 0.8] dropped)"
                    if cfg.get("frontier", True) else ", ADPO frontier filter off")
    return f"""- **rl**: {cfg['rl_iterations']} iterations of `{cfg['loss']}` with groups of
  {cfg['group_size']} rollouts per seed ({cfg['rl_groups']} seeds per iteration{screened}), reward
  {cfg['reward']}{frontier}, lr {cfg['rl_lr']}, EntroPIC target {cfg['entropy_target']} nats
  (0 = the starting entropy; Kp {cfg['entropy_kp']}, Ki {cfg['entropy_ki']}, entropy measured
  on the {measure}), CE anchor on the DAgger aggregate
  {cfg['bc_anchor']}, the sampled submodel following the full model by forward KL."""


#: TrainConfig fields that choose where a run computes, not what it learns.
PLACEMENT_FIELDS = ("threads", "device", "workers", "ray_address", "ray_workers")


def matching_recipe(cfg: dict) -> str | None:
    """The name of the recipe in config/train that the run's configuration equals, field for
    field apart from PLACEMENT_FIELDS; None if none does."""
    from embodied_stack.sim.train.config import TrainConfig, read_yaml, recipe_dirs

    def learned(data: dict) -> dict:
        fields = vars(TrainConfig.from_dict(data))
        return {k: v for k, v in fields.items() if k not in PLACEMENT_FIELDS}

    run = learned(cfg)
    for d in recipe_dirs():
        for path in sorted(d.glob("*.yaml")) if d.is_dir() else ():
            if learned(read_yaml(path)) == run:
                return path.stem
    return None


def model_card(to: Path, cfg: dict, ev: dict, run_info: dict, note: str) -> str:
    from embodied_stack.models.policy.elastic_vla import ElasticVLAConfig

    mc = ElasticVLAConfig.load(to / "config.json")
    from embodied_stack.models.policy import load_default_policy

    # parameters only: the weights file also holds buffers (the layer ranking)
    n_params = sum(p.numel() for p in load_default_policy(to).parameters())
    rows = []
    for sub, key in (("full", "full"), ("1/2", "half")):
        for world in [*WORLDS, *sorted({k[len(f"success_{key}_"):] for k in ev
                                         if k.startswith(f"success_{key}_")} - set(WORLDS))]:
            k = f"success_{key}_{world}"
            if k in ev:
                lo, hi = ev[f"ci95_{key}_{world}"]
                tasks = ev["details"][f"{key}_{world}"]["tasks"]
                per = ", ".join(f"{t} {v['success']:.0%} ({v['episodes']})"
                                for t, v in tasks.items())
                rows.append(f"| {sub} | {world} | {ev[k]:.0%} | [{lo:.0%}, {hi:.0%}] | {per} |")
    reference = (" and the task's first frame (`reference_frame`: the first frame after the "
                 "instruction, its memory of where the task started)" if mc.reference_frame else "")
    stages = " -> ".join(cfg["stages"])
    recipe = matching_recipe(cfg)
    recipe_line = (f"From nothing but the repository, by the recipe `config/train/{recipe}.yaml`: "
                   f"`embodied-stack train --recipe {recipe} --out runs/{recipe}` (this run: "
                   f"`{run_info.get('command', '?')}`, with the recipe's every field)" if recipe else
                   f"`{run_info.get('command', '?')}`")
    trained = (f"{run_info['wall_s'] / 60:.0f} minutes of training on {run_info.get('machine', '?')}"
               if "wall_s" in run_info else "wall time not recorded")
    stage_lines = "\n".join(stage_description(cfg, stage) for stage in cfg["stages"])
    return f"""# Model card: ElasticVLA default policy (`models/default_vla`)

The embedded default policy of embodied_stack: a compact MiMo-style vision-language-action
model ({n_params:,} parameters, {(to / 'model.safetensors').stat().st_size / 1e6:.1f} MB
safetensors) that serves both simulated worlds: a tabletop arm ("touch the red cube", "push
the blue ball to the left") and a car on a three-lane road ("change to the left lane", "stop
behind the obstacle"). Input: a 64x64 RGB-D camera frame ({mc.depth_encoding} depth encoding,
{mc.depth_min_m}-{mc.depth_max_m} m){reference}, the instruction, the embodiment and its
proprioception (no episode clock). Output: a chunk of {mc.chunk_length} actions x {mc.max_action_dim} dims in
{mc.action_bins} bins, in one forward pass. Nested elastic submodels full, 3/4, 1/2, 1/4.

**Intended use**: the simulation demo, tests, and a warm start for your own fine-tuning
(`embodied-stack train --init-from default ...`). It was trained only in these
simulated worlds; it is not a policy for a real robot.

## Results on unseen seeds

`{ev.get('command', 'embodied-stack eval')}`: {ev['episodes']} episodes per world and submodel,
seeds {ev['first_seed']}..{ev['first_seed'] + ev['episodes'] - 1} (training used seeds below
100000 and validated on 300000+), chunks executed as the policy node does (next chunk when
{ev['refill_at']} action remains), greedy. Figures from `eval.json` beside this card.

| submodel | world | success | 95% interval (Wilson) | per task (episodes) |
|---|---|---|---|---|
{chr(10).join(rows)}

## Against the previous default and its own BC + DAgger stage

On a fresh block of test seeds per world, used once for this claim (the tables' notes give
the seeds), `embodied-stack eval --episodes N --first-seed S` of each model and
`python bench/paired_success.py` on the pairs (figures in the repository's
`bench/results/eval_default_test_block.json`, `recipe_vs_previous_test_block.json` and
`rl_vs_bc_dagger_test_block.json`; `python bench/doc_tables.py` fills these tables). This
model:

<!-- table: eval_test_block -->
<!-- /table -->

Against the previous default (a chain of warm starts that this recipe replaces), paired:

<!-- table: recipe_vs_previous -->
<!-- /table -->

Its RL stage against the BC + DAgger model the same run had before it (`model_after_dagger`),
paired:

<!-- table: rl_vs_bc_dagger -->
<!-- /table -->

## Robustness: the shifts a real robot brings

`python bench/robustness.py` (docs/benchmarks.md) runs the same 500 unseen seeds per world
unshifted and under each shift at an exact magnitude (the worlds' `shift` option), paired seed
by seed; figures in the repository's `bench/results/robustness.json` (and `.png`; rerun it for
a new model, then `python bench/doc_tables.py` fills this table):

<!-- table: robustness -->
<!-- /table -->

Against the previous default on the same seeds, cell by cell (`python bench/robustness.py
--compare`; `bench/results/robustness_vs_previous.json`):

<!-- table: robustness_vs_previous -->
<!-- /table -->

## How it was trained

{recipe_line} (code: commit {run_info.get('commit', '?')}), {trained}.
Stages {stages}; every field of the run is in `train_config.json` beside this card, and
`run_info.json` holds the command, the machine and the wall time.
{note}

{stage_lines}

Curves (`curves.png`, from `training_log.json`): validation success per stage, losses,
RL token entropy against the EntroPIC target.

![training curves](curves.png)

## Limitations

- Simulation only, 64x64 images. Unless its recipe randomises them, trained at one camera
  placement, one lighting and one instruction grammar per world (unknown words map to `<unk>`):
  the robustness tables above show what moved cameras, other light and other words cost it.
- Success is measured in these worlds with their scripted success rules; see the per-task
  table for where it fails.
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished `embodied-stack train` run")
    parser.add_argument("--to", required=True, help="model folder to write")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--note", default="", help="a line for the card (e.g. resume history)")
    args = parser.parse_args(argv)
    run, to = Path(args.run), Path(args.to)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    if json.loads(state["progress"])["stage"] != "done":
        raise SystemExit(f"{run} has not finished training (resume it first)")
    from embodied_stack.models.policy import load_default_policy
    from embodied_stack.sim.eval import main as eval_main

    model = load_default_policy(run / "model")
    to.mkdir(parents=True, exist_ok=True)
    for stale in ("README.md", "eval.json", "curves.png", "training_log.json", "run_info.json"):
        (to / stale).unlink(missing_ok=True)
    model.save_pretrained(to)
    shutil.copyfile(run / "train_config.json", to / "train_config.json")
    log = json.loads(state["log"])
    atomic_write_json(to / "training_log.json", log, indent=None)
    plot_curves(log, to / "curves.png")
    ev = eval_main(["--model", str(to), "--episodes", str(args.episodes),
                    "--json", str(to / "eval.json")])
    ev["command"] = (f"embodied-stack eval --model {to} --episodes {args.episodes} "
                     "--json eval.json")
    atomic_write_json(to / "eval.json", ev)
    info_path = run / "run_info.json"
    run_info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if run_info:
        atomic_write_json(to / "run_info.json", run_info)
    cfg = json.loads((to / "train_config.json").read_text())
    atomic_write_bytes(to / "README.md", model_card(to, cfg, ev, run_info, args.note).encode())
    print(f"exported {run} -> {to} (model card {to / 'README.md'})")


if __name__ == "__main__":
    main()

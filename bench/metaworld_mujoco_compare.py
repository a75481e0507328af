"""Meta-World's scripted policies on Meta-World's own MT1 goals (``metaworld.MT1(task,
seed=0).train_tasks``, 50 per task, 500 steps), in whichever MuJoCo this interpreter has: run
once in a venv with Meta-World's pin (mujoco==3.3.0, unpatched) and once in the stack's venv
(mujoco 4.0.0 with sim/worlds/metaworld_mt10.py's weld fix), then merge (COMMANDS, in order).
"""

import argparse
import json
import os
import sys
import warnings

#: The three steps behind bench/results/metaworld_expert_mujoco3_vs_4.json (the MuJoCo 3.3.0
#: venv: python -m venv /tmp/mw33 && /tmp/mw33/bin/pip install mujoco==3.3.0 metaworld==3.1.1
#: packaging).
COMMANDS = (
    "MUJOCO_GL=egl /tmp/mw33/bin/python bench/metaworld_mujoco_compare.py --out /tmp/mj3.json",
    "python bench/metaworld_mujoco_compare.py --out /tmp/mj4.json",
    "python bench/metaworld_mujoco_compare.py --merge /tmp/mj3.json /tmp/mj4.json "
    "--out bench/results/metaworld_expert_mujoco3_vs_4.json",
)
MT10 = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3",
        "drawer-close-v3", "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3",
        "window-close-v3"]


def measure() -> dict:
    import mujoco

    if int(mujoco.__version__.split(".")[0]) >= 4:  # the stack's fix (the adapter's override)
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo
        from embodied_stack.sim.worlds import metaworld_mt10

        metaworld_mt10._patch_metaworld()
    import metaworld
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    from metaworld.policies import ENV_POLICY_MAP

    out = {}
    for name in MT10:
        tasks = metaworld.MT1(name, seed=0).train_tasks
        env, policy = ALL_V3_ENVIRONMENTS[name](), ENV_POLICY_MAP[name]()
        wins, steps = 0, []
        for task in tasks:
            env.set_task(task)
            obs, _ = env.reset()
            step = 0
            while step < 500:
                obs, _, _, _, info = env.step(policy.get_action(obs))
                step += 1
                if info["success"]:
                    break
            wins += bool(info["success"])
            steps.append(step)
        out[name] = {"episodes": len(tasks), "successes": wins,
                     "mean_steps": round(sum(steps) / len(steps), 1)}
        print(name, wins, "/", len(tasks), flush=True)
    return {"mujoco": mujoco.__version__, "metaworld": metaworld.__dict__.get("__version__", "3.1.1"),
            "tasks": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--merge", nargs="+", metavar="JSON")
    args = parser.parse_args()
    if args.merge:
        runs = [json.load(open(p)) for p in args.merge]
        result = {"command": " && ".join(COMMANDS),
                  "setting": "metaworld.MT1(task, seed=0).train_tasks (50 goals per task), "
                             "500 steps, scripted policies on the 39-D state",
                  "runs": runs}
    else:
        warnings.filterwarnings("ignore")
        result = measure()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()

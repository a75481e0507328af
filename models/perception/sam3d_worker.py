"""The SAM 3D Objects worker: runs in SAM 3D's own Python environment (started by
:class:`embodied_stack.models.perception.sam3d.Sam3dBackend` with the repository's
``notebook`` folder on PYTHONPATH). Imports nothing from embodied_stack.

Protocol: one JSON line out at start-up (``{"ok": true}`` or the load error); then per line
in (``{"request": npz with image + mask, "reply": npz path, "seed": int}``) one JSON line out,
the reply npz holding vertices, faces, vertex_colors, rotation (w, x, y, z), translation,
scale. No pickle anywhere.
"""

import json
import sys

import numpy as np


def _worker_main(pipeline: str) -> None:  # runs in SAM 3D's own environment
    out_stream = sys.stdout
    sys.stdout = sys.stderr  # the library's prints must not corrupt the protocol
    try:
        from inference import Inference  # noqa: PLC0415  (notebook/inference.py)

        model = Inference(pipeline, compile=False)
    except Exception as exc:  # report, do not hang the parent
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), file=out_stream,
              flush=True)
        return
    print(json.dumps({"ok": True}), file=out_stream, flush=True)
    for line in sys.stdin:
        try:
            req = json.loads(line)
            with np.load(req["request"], allow_pickle=False) as data:
                image, mask = data["image"], data["mask"]
            out = model(image, mask, seed=req["seed"])
            mesh = out["glb"]
            if hasattr(mesh, "dump"):  # a trimesh Scene: one mesh
                mesh = mesh.dump(concatenate=True)
            colors = getattr(getattr(mesh, "visual", None), "vertex_colors", None)
            arr = lambda x: np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)  # noqa
            np.savez(req["reply"], vertices=np.asarray(mesh.vertices),
                     faces=np.asarray(mesh.faces),
                     vertex_colors=np.asarray(colors) if colors is not None else np.zeros(0),
                     rotation=arr(out["rotation"]).reshape(-1)[:4],
                     translation=arr(out["translation"]).reshape(-1)[:3],
                     scale=arr(out["scale"]).reshape(-1)[:3])
            print(json.dumps({"ok": True}), file=out_stream, flush=True)
        except Exception as exc:
            print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}),
                  file=out_stream, flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: sam3d_worker.py <pipeline.yaml>  (started by the sam3d backend)")
    _worker_main(sys.argv[1])

"""RGBDRenderer with a free camera (for adapters of MuJoCo environments that name no camera):
what it renders where its camera model says, at the depth it reports."""

import numpy as np
import pytest

from embodied_stack.sim.worlds.base import RGBDRenderer  # (before mujoco: it picks the GL backend)

MJCF = """
<mujoco>
  <visual><global fovy="50"/></visual>
  <worldbody>
    <light pos="0 0 3" dir="0 0 -1"/>
    <geom type="plane" size="2 2 0.1" rgba="0.2 0.2 0.2 1"/>
    <body pos="{x} {y} {z}"><geom type="sphere" size="0.05" rgba="1 0 0 1"/></body>
  </worldbody>
</mujoco>
"""


@pytest.mark.parametrize("view", [
    {"lookat": [0.0, 0.0, 0.0], "distance": 1.0, "azimuth": 90.0, "elevation": -90.0},
    {"lookat": [0.1, -0.2, 0.05], "distance": 0.8, "azimuth": 30.0, "elevation": -35.0},
    {"lookat": [0.0, 0.0, 0.3], "distance": 1.5, "azimuth": -120.0, "elevation": -10.0},
])
def test_free_camera_sees_a_point_where_its_camera_model_projects_it(view):
    import mujoco

    centre = np.array([0.15, 0.1, 0.2])
    model = mujoco.MjModel.from_xml_string(MJCF.format(x=centre[0], y=centre[1], z=centre[2]))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    renderer = RGBDRenderer(model, view, 96, 96)
    try:
        rgb, depth, _ = renderer.render(data)
        cam = renderer.camera_model(data)
    finally:
        renderer.close()
    # The sphere's centre in the optical frame, then in pixels.
    p = np.linalg.inv(cam.T_world_camera) @ np.r_[centre, 1.0]
    assert p[2] > 0, "the sphere is behind the camera"
    u, v = (cam.K @ (p[:3] / p[2]))[:2]
    iu, iv = int(round(u)), int(round(v))
    assert 0 <= iu < 96 and 0 <= iv < 96, (u, v)
    r, g, b = rgb[iv, iu].astype(int)
    assert r > 2 * max(g, b, 20), f"pixel ({iu}, {iv}) is {rgb[iv, iu]}, not the red sphere"
    # The nearest surface point: the centre's depth less about one radius.
    assert p[2] - 0.06 < depth[iv, iu] < p[2] - 0.02, (depth[iv, iu], p[2])
    # Looking along +z of the optical frame, from the pose MuJoCo gives the free camera.
    forward = cam.T_world_camera[:3, 2]
    az, el = np.deg2rad(view["azimuth"]), np.deg2rad(view["elevation"])
    np.testing.assert_allclose(forward, [np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)],
                               atol=1e-6)
    np.testing.assert_allclose(cam.T_world_camera[:3, :3].T @ cam.T_world_camera[:3, :3], np.eye(3),
                               atol=1e-6)  # (the GL camera is float32)


@pytest.mark.parametrize("camera, quoted", [
    ({"lookat": [0, 0, 0], "distance": 1.0, "azimuth": 0.0}, "missing \\['elevation'\\]"),
    ({"lookat": [0, 0, 0], "distance": 1.0, "azimuth": 0.0, "elevation": 0.0, "fovy": 45},
     "unknown \\['fovy'\\]"),
    ({"lookat": [0, 0], "distance": 1.0, "azimuth": 0.0, "elevation": 0.0}, "lookat must be 3"),
    ({"lookat": [0, 0, 0], "distance": 0.0, "azimuth": 0.0, "elevation": 0.0}, "distance > 0"),
    ("nowhere", "camera 'nowhere' not in the model \\(its cameras: \\[\\]"),
])
def test_a_bad_camera_is_an_error_quoting_it(camera, quoted):
    import mujoco

    model = mujoco.MjModel.from_xml_string(MJCF.format(x=0, y=0, z=0.1))
    with pytest.raises(ValueError, match=quoted):
        RGBDRenderer(model, camera, 32, 32)

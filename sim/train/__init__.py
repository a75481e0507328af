"""Training of the ElasticVLA in the simulation worlds (`embodied-stack train`): behaviour
cloning, DAgger and group RL. sim/train/trainer.py lists the files in the order a run uses them."""

"""ElasticVLA, the embedded default policy, as a configuration + modeling pair (LeRobot's
shape: ``configuration_act.py`` + ``modeling_act.py``):

- ``configuration_elastic_vla.py``: ElasticVLAConfig, every field documented and validated once;
  saved as ``config.json``.
- ``modeling_elastic_vla.py``: ElasticVLA, the network with its training loss (``forward``),
  acting (``select_action``), ``action_logits`` for export and the runtimes, and its files.
- Its parts: ``layers.py`` (sliceable layers), ``submodel_switching.py`` (nested submodels),
  ``preprocessing.py`` (observations and actions <-> tensors), ``target_keypoint.py`` and
  ``tokenizer.py`` (saved as ``tokenizer.json``).
"""

from .configuration_elastic_vla import ElasticVLAConfig
from .modeling_elastic_vla import ElasticVLA
from .tokenizer import InstructionTokenizer

__all__ = ["ElasticVLA", "ElasticVLAConfig", "InstructionTokenizer"]

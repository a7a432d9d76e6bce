"""iw3's light inpainting networks, trained here and saved as the nunif model files iw3
loads (docs/iw3.md).

* :mod:`.layers`: windowed gMLP blocks and the rest of nunif's modules they use;
* :mod:`.light`: :class:`LightInpaintV1`, :class:`LightVideoInpaintV1` (nunif's parameter
  names and shapes; this project's ``forward(x, mask, depth)``);
* :mod:`.model_file`: nunif's model file format, the ``inpaint_models.yml`` lines.
"""

from .light import SEQ_LEN, LightInpaintV1, LightVideoInpaintV1, inner
from .model_file import (
    NUNIF_MODELS,
    NunifFileError,
    is_nunif_model_file,
    load_nunif_model,
    nunif_kind,
    save_nunif_model,
    yml_lines,
)

__all__ = ["LightInpaintV1", "LightVideoInpaintV1", "SEQ_LEN", "inner", "NUNIF_MODELS",
           "NunifFileError", "is_nunif_model_file", "load_nunif_model", "nunif_kind",
           "save_nunif_model", "yml_lines"]

"""The one preprocessing used by training, evaluation, calibration and the runtime (SPEC §4).

decode (at reduced scale when the source is large; :mod:`.decode`) → find the circular field
of view (:mod:`.fov`) → square crop around it, zero padding where it leaves the image →
resize to the model side (:mod:`.geometry`) → normalise (:mod:`.pipeline`). Every parameter
is in :class:`PreprocessSpec` (:mod:`.spec`), recorded with every model. :class:`Geometry`
records the crop so that model-space outputs can be drawn back onto the original image.
:mod:`.disc` finds the optic disc and the eye it implies. NumPy, OpenCV, Pillow, simplejpeg only;
:mod:`.dicom` decodes DICOM photos with pydicom, imported only when a DICOM file comes; both
it and :mod:`.decode` decode JPEG data with :mod:`.jpeg`'s strict decoder.
"""

from drtrt.preprocess.decode import decode_image
from drtrt.preprocess.disc import OpticDisc, eye_mismatch, locate_disc
from drtrt.preprocess.fov import find_fov
from drtrt.preprocess.geometry import FieldOfView, Geometry
from drtrt.preprocess.jpeg import MAX_DECODED_PIXELS
from drtrt.preprocess.pipeline import Preprocessed, normalise, preprocess, preprocess_rgb
from drtrt.preprocess.spec import PreprocessSpec

__all__ = ["MAX_DECODED_PIXELS", "FieldOfView", "Geometry", "OpticDisc", "PreprocessSpec", "Preprocessed",
           "decode_image", "eye_mismatch", "find_fov", "locate_disc", "normalise", "preprocess", "preprocess_rgb"]

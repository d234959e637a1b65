"""Data sets: the official IDRiD layout (:mod:`.idrid`, :mod:`.masks`) and a synthetic
generator that writes the same layout (:mod:`.synthetic_fundus` renders the pictures, placed by
:mod:`.synthetic_geometry`, their lesions painted by :mod:`.synthetic_lesions`; :mod:`.synth`
writes the set). NumPy, OpenCV and Pillow only.
"""

"""Data sets: the official IDRiD layout (:mod:`.idrid`, :mod:`.masks`) and a synthetic
generator that writes the same layout (:mod:`.fundus` draws the pictures, :mod:`.synth`
writes the set). NumPy, OpenCV and Pillow only.
"""

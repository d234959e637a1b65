#!/usr/bin/env python3
"""The station container's health: healthy while `drtrt doctor` says this machine can screen with an
engine (TensorRT importable, a usable GPU, CUDA bindings)."""

import json
import subprocess
import sys

report = json.loads(subprocess.run(["drtrt", "doctor", "--json"], capture_output=True, text=True, check=True).stdout)
engine = next(c for c in report["capabilities"] if c["command"] == "screen / evaluate (.engine)")
print(engine["detail"])
sys.exit(0 if engine["available"] else 1)

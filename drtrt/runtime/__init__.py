"""Reading one photo on the device: the runner contract and its engines (:mod:`.backends`), the one
batched inference loop, and the predictor (decode → preprocess → quality gate → model → findings).
What becomes of the findings — the session, the record, verdicts, reports — is :mod:`drtrt.clinic`.
Imports no torch: the PyTorch runner is registered by import path (:mod:`.registry`) and lives in
:mod:`drtrt.train`.
"""

"""A local validation study (issue 24): a registered protocol, people's reads as the reference standard,
the model's verdicts from session folders, per-patient figures with 95 % intervals against the
endpoints, and a signed validation record only when every endpoint is cleared (``docs/model-trust.md``)."""

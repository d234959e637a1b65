"""The clinic's record: what happens to a photo's findings once the runtime has read them.

The screening session (intake → the runtime's pipeline → one durable commit per image) and its
store (``session.db``, every table declared in :mod:`.schema`), the result's files (overlay,
mask, thumbnail), patients and visits, the verdicts (:mod:`.verdicts`, the only place a verdict
is made), referral pathways, the session's reports, referral letters and the camera-folder watch. Imports no torch.
"""

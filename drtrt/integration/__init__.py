"""From camera to hospital record: DICOM in (files and a storage SCP), DICOM and FHIR out, and
store-and-forward to a PACS and a FHIR server through an outbox in the session store.

Needs the ``integration`` extra (pydicom, pynetdicom, highdicom, fhir.resources); reading DICOM
files for screening needs only pydicom.
"""

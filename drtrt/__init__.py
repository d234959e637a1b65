"""drtrt: diabetic-retinopathy screening on the edge.

The package is a house of stages; each imports only from the stages below it
(``tests/test_layers.py`` enforces this; ``docs/architecture.md`` draws it)::

    cli           the ``drtrt`` command: one module per command group, tables, exit codes
    station       the screening station's web app: visits, live results, reports (Starlette)
    integration   DICOM in and out, FHIR, the DICOM receiver, store-and-forward to PACS/FHIR
    serving       Triton model repositories for reading centres, the models its Python backend runs
    train         PyTorch: the thesis network, losses, data, trainer, the PyTorch runner
    export        checkpoint → ONNX (torch), ONNX → TensorRT engine
    calibration   precision baked into the ONNX: FP16 conversion, INT8 Q/DQ, their gates
    verify        evidence: task metrics, evaluation, parity, golden files, benchmarks
    clinic        the screening record: session, store and its schema, visits, verdicts, reports, camera watch
    runtime       reading a photo: runners and their engines (ONNX Runtime, TensorRT, Triton), the predictor
    data          the IDRiD reader and the synthetic IDRiD generator
    core          errors, config, task vocabulary, model info, file helpers, preprocessing

Importing this package imports no framework: the runtime installs without torch.
"""

__version__ = "0.1.0"

"""goose-sam3: fine-grained GOOSE semantic segmentation with SAM3 as backbone and teacher.

Data flows one way (layers in docs/interfaces.md, enforced by tests/test_layers.py): ground (ontology,
config, io, paths) -> data, models, metrics -> infer -> teacher -> train -> viz -> params -> reports -> cli.
Importing the package has no side effects (no torch settings, no files written).
"""

__version__ = "0.1.0"

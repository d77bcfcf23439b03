"""goose-sam3: fine-grained GOOSE semantic segmentation with SAM3 as backbone and teacher.

Data flows one way: ontology -> data -> models -> teacher -> train -> infer -> metrics -> reports.
Importing the package has no side effects (no torch settings, no files written).
"""

__version__ = "0.1.0"

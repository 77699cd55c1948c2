"""Language data and text transformations shared by several stages: stop words, the OCR
damage model."""

"""Reading pansharpening data: the pair type, one reader per file format, and the catalogue of known data sets."""

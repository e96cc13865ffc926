"""Architecture search: search spaces as data (`space`), mapping choice indices to ArchSpecs."""

"""Model builders: the backbone from an ArchSpec, the SSDLite head, and the detector that joins them."""

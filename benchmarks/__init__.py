"""Benchmarks of the listener against DCMTK's storescp and a bare pynetdicom SCP."""

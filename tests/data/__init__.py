"""Tests of the data side: scenes, registry, pull, validation gate, importers."""

"""Classifier: decide sectors and countries for every raw item, store it, publish it."""

"""Analyses over the store: campaigns (LSH links, components), botnets, networks, harvesters."""

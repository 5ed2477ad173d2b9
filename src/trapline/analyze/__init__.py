"""Analyses over the store: campaigns (LSH links, components), botnets, networks, harvesters,
timeline (series and change points), takedown impact."""
